import ArgumentParser
import Foundation
import MoongateCore

struct CheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Load every script in a fresh state and validate its endpoints, like nginx -t.",
        discussion: "Prints one line per endpoint. On any error prints file:line: message and exits 1."
    )

    @OptionGroup var scripts: ScriptOptions
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let logger = self.logging.bootstrap()
        switch await checkScripts(directory: self.scripts.directory, limits: self.scripts.limits, logger: logger) {
        case .success(let specs):
            for spec in specs {
                print(spec.summary)
            }
            print("\(self.scripts.directory): \(specs.count) endpoint\(specs.count == 1 ? "" : "s") OK")
        case .failure(let failure):
            for error in failure.errors {
                FileHandle.standardError.write(Data("\(error)\n".utf8))
            }
            throw ExitCode(1)
        }
    }
}
