import Foundation
import LuaBridge
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SQLiteNIO

/// An SQLite file scripts query (`--sqlite NAME=PATH[:rw]`): read-only unless `:rw`, opened with
/// SQLite's own `mode=ro`, so no statement can write it. One thread runs its statements in order.
final class ScriptSQLite: ScriptDatabase {
    let name: String
    let writable: Bool
    private let connection: SQLiteConnection
    private let threadPool: NIOThreadPool
    /// Makes a statement and its `SELECT changes()` adjacent on the one thread.
    private let submitting = NIOLock()

    private init(name: String, writable: Bool, connection: SQLiteConnection, threadPool: NIOThreadPool) {
        self.name = name
        self.writable = writable
        self.connection = connection
        self.threadPool = threadPool
    }

    static func open(name: String, path: String, writable: Bool, loop: any EventLoop, logger: Logger) async throws -> ScriptSQLite {
        let flag = "--sqlite \(name)=\(path)\(writable ? ":rw" : "")"
        if !writable, !FileManager.default.fileExists(atPath: path) {
            throw ScriptDatabases.OpenFailure(description: "\(flag): no such file (a read-only database must exist; add :rw to create it)")
        }
        let threadPool = NIOThreadPool(numberOfThreads: 1)
        threadPool.start()
        let absolute = URL(fileURLWithPath: path).standardizedFileURL.path
        let encoded = absolute.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? absolute
        do {
            let connection = try await SQLiteConnection.open(
                storage: .file(path: "file:\(encoded)?mode=\(writable ? "rwc" : "ro")"),
                threadPool: threadPool,
                logger: logger,
                on: loop
            ).get()
            // A bounded wait for another writer's lock instead of sqlite-nio's endless retries.
            _ = try await connection.query("PRAGMA busy_timeout = 5000", []).get()
            // Reading the schema now turns "not a database" into a start-up error.
            _ = try await connection.query("SELECT count(*) FROM sqlite_master", []).get()
            return ScriptSQLite(name: name, writable: writable, connection: connection, threadPool: threadPool)
        } catch {
            try? await threadPool.shutdownGracefully()
            throw ScriptDatabases.OpenFailure(description: "\(flag): \(Self.describe(error))")
        }
    }

    func query(_ sql: String, _ parameters: [LuaValue]) async -> OperationResult {
        let binds: [SQLiteData]
        do {
            binds = try Self.binds(parameters)
        } catch {
            return self.failure(error.message)
        }
        let rows = NIOLockedValueBox<(rows: [LuaValue], budget: ResultBudget, overflowed: Bool)>(([], ResultBudget(), false))
        let done = self.connection.query(sql, binds, logger: self.connection.logger) { row in
            rows.withLockedValue { result in
                guard !result.overflowed else { return }
                let fields = row.columns.map { ($0.name, Self.luaValue($0.data)) }
                result.overflowed = !fields.allSatisfy { result.budget.take($0.1) }
                if !result.overflowed { result.rows.append(.table(fields)) }
            }
        }
        do {
            try await done.get()
            let (collected, _, overflowed) = rows.withLockedValue { $0 }
            if overflowed { return self.failure(SQLFailure.tooLarge.message) }
            return OperationResult(values: [.array(collected)], outcome: "ok")
        } catch {
            return self.failure(self.explain(error))
        }
    }

    func exec(_ sql: String, _ parameters: [LuaValue]) async -> OperationResult {
        guard self.writable else {
            return self.failure("the database is read-only (start the host with --sqlite \(self.name)=PATH:rw to write it)")
        }
        let binds: [SQLiteData]
        do {
            binds = try Self.binds(parameters)
        } catch {
            return self.failure(error.message)
        }
        let (statement, changes) = self.submitting.withLock {
            (self.connection.query(sql, binds, logger: self.connection.logger) { _ in }, self.connection.query("SELECT changes()", []))
        }
        do {
            try await statement.get()
            let changed = try await changes.get().first?.columns.first?.data.integer ?? 0
            return OperationResult(values: [.integer(Int(changed))], outcome: "ok")
        } catch {
            return self.failure(self.explain(error))
        }
    }

    func close() async {
        try? await self.connection.close().get()
        try? await self.threadPool.shutdownGracefully()
    }

    private func explain(_ error: any Error) -> String {
        let message = Self.describe(error)
        if !self.writable, message.contains("readonly") {
            return message + " (the database is read-only: --sqlite \(self.name)=PATH:rw to write it)"
        }
        return message
    }

    private static func describe(_ error: any Error) -> String {
        (error as? SQLiteError)?.message ?? "\(error)"
    }

    static func binds(_ parameters: [LuaValue]) throws(SQLFailure) -> [SQLiteData] {
        try parameters.enumerated().map { (index, value) throws(SQLFailure) in
            switch value {
            case .nil, .jsonNull: return .null
            case .boolean(let flag): return .integer(flag ? 1 : 0)
            case .integer(let number): return .integer(number)
            case .number(let number): return .float(number)
            case .string(let bytes):
                if let text = String(validating: bytes, as: UTF8.self) {
                    return .text(text)
                }
                return .blob(ByteBuffer(bytes: bytes))
            case .array, .table:
                throw SQLFailure(message: "parameter \(index + 1) is a table: pass json.encode(value) to store it as text")
            }
        }
    }

    static func luaValue(_ data: SQLiteData) -> LuaValue {
        switch data {
        case .integer(let number): .integer(Int(number))
        case .float(let number): .number(number)
        case .text(let text): .text(text)
        case .blob(let bytes): .string(Array(bytes.readableBytesView))
        case .null: .jsonNull
        }
    }
}
