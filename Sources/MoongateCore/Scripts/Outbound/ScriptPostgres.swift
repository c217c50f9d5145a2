import Foundation
import LuaBridge
import Logging
import NIOCore
import PostgresNIO

/// A PostgreSQL database scripts query (`--postgres NAME=URL`), through a small postgres-nio pool.
/// Parameters go as text of no declared type, so the server infers each from where it stands
/// (`WHERE id = $1` reads `"5"` as an integer), as libpq does.
final class ScriptPostgres: ScriptDatabase {
    let name: String
    private let client: PostgresClient
    private let pool: Task<Void, Never>
    private let logger: Logger

    private init(name: String, client: PostgresClient, logger: Logger) {
        self.name = name
        self.client = client
        self.logger = logger
        self.pool = Task { await client.run() }
    }

    static func open(name: String, url text: String, loop: any EventLoop, logger: Logger) async throws -> ScriptPostgres {
        let url = try PostgresURL(text, flag: "--postgres \(name)")
        do {
            try await ClusterStartupCheck.connect(url, loop: loop, logger: logger)
        } catch let failure as ClusterStartupCheck.Failure {
            throw ScriptDatabases.OpenFailure(description: "--postgres \(name): \(failure.reason)")
        }
        var configuration = url.clientConfiguration
        configuration.options.connectTimeout = .seconds(5)
        configuration.options.maximumConnections = 4
        return ScriptPostgres(name: name, client: PostgresClient(configuration: configuration, backgroundLogger: logger), logger: logger)
    }

    func query(_ sql: String, _ parameters: [LuaValue]) async -> OperationResult {
        do {
            let result = try await self.run(sql, parameters)
            var budget = ResultBudget()
            let rows = try result.rows.map { row in
                LuaValue.table(
                    try row.map { cell in
                        let value = try Self.luaValue(cell)
                        guard budget.take(value) else { throw SQLFailure.tooLarge }
                        return (cell.columnName, value)
                    }
                )
            }
            return OperationResult(values: [.array(rows)], outcome: "ok")
        } catch let failure as SQLFailure {
            return self.failure(failure.message)
        } catch {
            return self.failure(ClusterStartupCheck.describe(error))
        }
    }

    func exec(_ sql: String, _ parameters: [LuaValue]) async -> OperationResult {
        do {
            let result = try await self.run(sql, parameters)
            return OperationResult(values: [.integer(result.metadata.rows ?? 0)], outcome: "ok")
        } catch let failure as SQLFailure {
            return self.failure(failure.message)
        } catch {
            return self.failure(ClusterStartupCheck.describe(error))
        }
    }

    private func run(_ sql: String, _ parameters: [LuaValue]) async throws -> PostgresQueryResult {
        var binds = PostgresBindings(capacity: parameters.count)
        for (index, value) in parameters.enumerated() {
            switch value {
            case .nil, .jsonNull: binds.appendNull()
            case .boolean(let flag): binds.append(UntypedText(flag ? "true" : "false"))
            case .integer(let number): binds.append(UntypedText(String(number)))
            case .number(let number): binds.append(UntypedText(number.formatted))
            case .string(let bytes): binds.append(UntypedText(bytes))
            case .array, .table:
                throw SQLFailure(message: "parameter \(index + 1) is a table: pass json.encode(value) to store it as JSON or text")
            }
        }
        let query = PostgresQuery(unsafeSQL: sql, binds: binds)
        return try await self.client.withConnection { connection in
            try await connection.query(query, logger: self.logger).get()
        }
    }

    func close() async {
        self.pool.cancel()
        await self.pool.value
    }

    /// A column as Lua sees it: numbers, booleans and text as themselves, NULL as `json.null`,
    /// times as ISO 8601 text; a type with no such reading asks for a cast.
    static func luaValue(_ cell: PostgresCell) throws -> LuaValue {
        guard var bytes = cell.bytes else { return .jsonNull }
        do {
            switch cell.dataType {
            case .bool: return .boolean(try cell.decode(Bool.self))
            case .int2, .int4, .int8: return .integer(try cell.decode(Int.self))
            case .oid where cell.format == .binary:
                // postgres-nio reads no integer from an oid: its binary form is four bytes, big-endian.
                guard let oid = bytes.readInteger(as: UInt32.self) else { throw SQLFailure(message: "a short oid") }
                return .integer(Int(oid))
            case .float4, .float8: return .number(try cell.decode(Double.self))
            case .numeric:
                let decimal = try cell.decode(Decimal.self)
                return .number(NSDecimalNumber(decimal: decimal).doubleValue)
            case .uuid: return .text(try cell.decode(UUID.self).uuidString.lowercased())
            case .timestamp, .timestamptz, .date:
                return .text(try cell.decode(Date.self).formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true)))
            case .bytea: return .string(Array(bytes.readableBytesView))
            case .jsonb:
                // The binary form leads with a version byte.
                _ = bytes.readInteger(as: UInt8.self)
                return .string(Array(bytes.readableBytesView))
            case .text, .varchar, .bpchar, .name, .json, .xml, .unknown:
                return .string(Array(bytes.readableBytesView))
            default:
                if cell.format == .text {
                    return .string(Array(bytes.readableBytesView))
                }
            }
        } catch {
            throw SQLFailure(message: "column \(cell.columnName) (\(cell.dataType)) could not be read: \(error)")
        }
        throw SQLFailure(message: "column \(cell.columnName) has type \(cell.dataType), which sql.query does not read: cast it, as in \(cell.columnName)::text")
    }
}

/// A parameter as text with no declared type (OID 0): the server infers its type.
private struct UntypedText: PostgresDynamicTypeEncodable {
    let bytes: [UInt8]

    init(_ text: String) { self.bytes = Array(text.utf8) }
    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var psqlType: PostgresDataType { PostgresDataType(0) }
    var psqlFormat: PostgresFormat { .text }

    func encode<JSONEncoder: PostgresJSONEncoder>(into byteBuffer: inout ByteBuffer, context: PostgresEncodingContext<JSONEncoder>) {
        byteBuffer.writeBytes(self.bytes)
    }
}
