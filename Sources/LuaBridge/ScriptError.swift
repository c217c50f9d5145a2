/// A failure of script code, named by the script file and line that caused it.
public struct ScriptError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        /// The source did not compile.
        case compile
        /// Lua raised an error while running.
        case runtime
        /// The call ran past its instruction budget and was stopped.
        case budget
        /// The state reached its memory cap.
        case memory
        /// The script ran, but what it declared is not valid (an endpoint definition, say).
        case definition
        /// The scripts folder, or a file in it, could not be read.
        case unreadable
        /// The callback waited on I/O past its wall-clock limit and was cancelled.
        case timeout
        /// The callback waited on I/O when its script was reloaded or stopped, and was cancelled.
        case cancelled
    }

    public var kind: Kind
    /// The script as named in logs: `scripts/queue.lua`.
    public var script: String
    public var line: Int?
    public var message: String
    public var traceback: String?

    public init(kind: Kind, script: String, line: Int?, message: String, traceback: String? = nil) {
        self.kind = kind
        self.script = script
        self.line = line
        self.message = message
        self.traceback = traceback
    }

    /// `file:line: message`, the form compilers and `nginx -t` use.
    public var description: String {
        if let line {
            return "\(script):\(line): \(message)"
        }
        return "\(script): \(message)"
    }

    /// Builds an error from a Lua message such as `scripts/a.lua:3: boom`. A location at the start of
    /// the message wins over the blamed frame: `error(msg, 2)` deliberately points at a caller.
    static func parse(
        kind: Kind,
        rawMessage: String,
        blamedScript: String?,
        blamedLine: Int?,
        fallbackScript: String,
        traceback: String? = nil
    ) -> ScriptError {
        if let located = splitLocation(rawMessage) {
            // A location inside the host's own chunks ("moongate/prelude.lua:43:") says nothing
            // to a script author: blame the script frame instead, or at least the script.
            if HostChunk.contains(located.script) {
                return ScriptError(
                    kind: kind,
                    script: blamedScript ?? fallbackScript,
                    line: blamedScript == nil ? nil : blamedLine,
                    message: located.message,
                    traceback: traceback
                )
            }
            return ScriptError(
                kind: kind,
                script: located.script,
                line: located.line,
                message: located.message,
                traceback: traceback
            )
        }
        return ScriptError(
            kind: kind,
            script: blamedScript ?? fallbackScript,
            line: blamedLine,
            message: rawMessage,
            traceback: traceback
        )
    }

    private static func splitLocation(_ message: String) -> (script: String, line: Int, message: String)? {
        // "source:line: text"; the source itself may contain colons, the line never does.
        var searchStart = message.startIndex
        while let colon = message[searchStart...].firstIndex(of: ":") {
            let afterColon = message.index(after: colon)
            let digits = message[afterColon...].prefix(while: \.isNumber)
            let afterDigits = digits.endIndex
            if !digits.isEmpty, afterDigits < message.endIndex, message[afterDigits] == ":",
                let line = Int(digits), colon > message.startIndex
            {
                let script = String(message[..<colon])
                var rest = message[message.index(after: afterDigits)...]
                if rest.first == " " {
                    rest = rest.dropFirst()
                }
                return (script, line, String(rest))
            }
            searchStart = afterColon
        }
        return nil
    }
}
