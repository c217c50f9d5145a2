public import ArgumentParser
public import Logging

struct LoggingOptions: ParsableArguments {
    enum Format: String, ExpressibleByArgument, CaseIterable {
        case text, json
    }

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error or critical.")
    var logLevel: Logger.Level = .info

    @Option(name: .long, help: "Log format: text (for people) or json (one object per line, for machines).")
    var logFormat: Format = .text

    /// Sends every log line to standard error at the chosen level and format; call once per process.
    func bootstrap() -> Logger {
        let level = self.logLevel
        let format = self.logFormat
        LoggingSystem.bootstrap { label in
            switch format {
            case .text:
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            case .json:
                var handler = JSONLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
        }
        return Logger(label: "moongate")
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
