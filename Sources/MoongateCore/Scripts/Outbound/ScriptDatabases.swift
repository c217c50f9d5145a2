import LuaBridge
import Logging
import NIOCore

/// A database scripts reach by name with `sql.query` and `sql.exec`, from the command line:
/// `--sqlite NAME=PATH[:rw]` or `--postgres NAME=URL`.
public enum DatabaseSetting: Sendable, Equatable {
    case sqlite(name: String, path: String, writable: Bool)
    case postgres(name: String, url: String)

    public var name: String {
        switch self {
        case .sqlite(let name, _, _), .postgres(let name, _): name
        }
    }

    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    /// `NAME=PATH` (read-only) or `NAME=PATH:rw`.
    public static func sqlite(_ text: String) throws -> DatabaseSetting {
        let (name, rest) = try Self.split(text, flag: "--sqlite", expected: "NAME=PATH or NAME=PATH:rw")
        let writable = rest.hasSuffix(":rw")
        let path = writable ? String(rest.dropLast(3)) : rest
        guard !path.isEmpty else { throw Invalid(description: "--sqlite \(text): no path (expected NAME=PATH or NAME=PATH:rw)") }
        return .sqlite(name: name, path: path, writable: writable)
    }

    /// `NAME=postgres://USER:PASSWORD@HOST:PORT/DATABASE`.
    public static func postgres(_ text: String) throws -> DatabaseSetting {
        let (name, url) = try Self.split(text, flag: "--postgres", expected: "NAME=postgres://USER:PASSWORD@HOST:PORT/DATABASE")
        _ = try PostgresURL(url, flag: "--postgres \(name)")
        return .postgres(name: name, url: url)
    }

    private static func split(_ text: String, flag: String, expected: String) throws -> (String, String) {
        guard let equals = text.firstIndex(of: "=") else {
            throw Invalid(description: "\(flag) \(text): expected \(expected)")
        }
        let name = String(text[..<equals])
        guard !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }) else {
            throw Invalid(description: "\(flag) \(text): the name must be letters, digits, _ or - (expected \(expected))")
        }
        return (name, String(text[text.index(after: equals)...]))
    }
}

/// One database a script may query: rows back as Lua tables, parameters always bound.
protocol ScriptDatabase: Sendable {
    var name: String { get }
    /// `sql.query`: the rows, as an array of tables keyed by column name.
    func query(_ sql: String, _ parameters: [LuaValue]) async -> OperationResult
    /// `sql.exec`: the number of rows the statement changed.
    func exec(_ sql: String, _ parameters: [LuaValue]) async -> OperationResult
    func close() async
}

/// Why a statement failed, for the script: `nil, "db: message"`.
struct SQLFailure: Error {
    let message: String

    /// Rows beyond what one call may bring into the script's state.
    static let tooLarge = SQLFailure(message: "the result is larger than \(ResultBudget.limit >> 20) MiB: select fewer rows or columns (LIMIT)")
}

/// What one `sql.query` may bring back: its rows, counted as they are read, up to 8 MiB (as an
/// HTTP body), so a `SELECT *` of a large table fails instead of filling the host's memory.
struct ResultBudget {
    static let limit = 8 << 20
    private var used = 0

    mutating func take(_ value: LuaValue) -> Bool {
        switch value {
        case .string(let bytes): self.used += bytes.count + 16
        default: self.used += 16
        }
        return self.used <= Self.limit
    }
}

extension ScriptDatabase {
    func failure(_ message: String) -> OperationResult {
        .failure("\(self.name): \(message)")
    }
}

/// The databases named on the command line, opened before the scripts load so that a wrong path,
/// URL or password stops the host with a clear error.
final class ScriptDatabases: Sendable {
    let byName: [String: any ScriptDatabase]

    private init(_ databases: [any ScriptDatabase]) {
        self.byName = Dictionary(databases.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
    }

    static let none = ScriptDatabases([])

    struct OpenFailure: Error, CustomStringConvertible {
        let description: String
    }

    static func open(_ settings: [DatabaseSetting], loop: any EventLoop, logger: Logger) async throws -> ScriptDatabases {
        var opened: [any ScriptDatabase] = []
        do {
            for setting in settings {
                guard !opened.contains(where: { $0.name == setting.name }) else {
                    throw OpenFailure(description: "two databases are named '\(setting.name)' (--sqlite / --postgres)")
                }
                switch setting {
                case .sqlite(let name, let path, let writable):
                    opened.append(try await ScriptSQLite.open(name: name, path: path, writable: writable, loop: loop, logger: logger))
                case .postgres(let name, let url):
                    opened.append(try await ScriptPostgres.open(name: name, url: url, loop: loop, logger: logger))
                }
            }
        } catch {
            for database in opened {
                await database.close()
            }
            throw error
        }
        return ScriptDatabases(opened)
    }

    func close() async {
        for database in self.byName.values {
            await database.close()
        }
    }

    /// Why `name` names no database, with the flags that would.
    static func unknown(_ name: String) -> String {
        "no database named '\(name)': start the host with --sqlite \(name)=PATH or --postgres \(name)=URL"
    }
}
