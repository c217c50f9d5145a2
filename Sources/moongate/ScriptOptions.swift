import ArgumentParser
import Foundation
import MoongateCore

struct ScriptOptions: ParsableArguments {
    @Argument(help: "Folder of *.lua endpoint scripts.")
    var directory: String = "scripts"

    @Option(name: .long, help: "Memory cap per script's Lua state, in MiB.")
    var luaMemory: Int = 64

    @Option(name: .long, help: "Lua VM instructions one callback may run before it is stopped.")
    var luaBudget: Int32 = 50_000_000

    @Option(name: .long, help: "A folder scripts may read with read_file/read_json (repeatable; the scripts' own folder always is).")
    var allowRead: [String] = []

    @Option(name: .long, help: "Seconds one callback may take, waiting on I/O included, before it is cancelled.")
    var luaTimeout: Double = 30

    @Option(name: .long, help: "A host scripts may reach with http.*: HOST, HOST:PORT, or * for any (repeatable; none by default).")
    var allowNet: [String] = []

    @Option(name: .long, help: "Largest HTTP response body a script may read, in bytes.")
    var httpMaxBody: Int = 8 << 20

    @Option(name: .long, help: "PEM file of certificate authorities HTTPS trusts besides the system's.")
    var caFile: String?

    @Option(name: .long, help: "An SQLite file scripts query as NAME: NAME=PATH (read-only) or NAME=PATH:rw (repeatable).")
    var sqlite: [String] = []

    @Option(name: .long, help: "A PostgreSQL database scripts query as NAME: NAME=postgres://USER:PASSWORD@HOST:PORT/DB (repeatable).")
    var postgres: [String] = []

    @Option(name: .long, help: "The absolute path of a program scripts may run with exec (repeatable; none by default).")
    var allowExec: [String] = []

    @Option(name: .long, help: "A JSON Web Key Set (file or http(s) URL) whose keys jwt.verify accepts (RS256, ES256, EdDSA, ...).")
    var jwks: String?

    @Option(name: .long, help: "Seconds between reloads of --jwks (a token with an unknown kid also reloads it).")
    var jwksRefresh: Double = 300

    var databases: [DatabaseSetting] {
        get throws {
            try self.sqlite.map(DatabaseSetting.sqlite) + self.postgres.map(DatabaseSetting.postgres)
        }
    }

    var limits: ScriptLimits {
        ScriptLimits(
            memoryBytes: self.luaMemory << 20,
            instructionBudget: self.luaBudget,
            readableDirectories: self.allowRead,
            callTimeout: self.luaTimeout,
            outbound: OutboundPolicy(
                allowedNet: self.allowNet,
                httpMaxBody: self.httpMaxBody,
                caFile: self.caFile,
                allowedPrograms: self.allowExec,
                databases: (try? self.databases) ?? [],
                jwks: self.jwks,
                jwksRefresh: self.jwksRefresh
            )
        )
    }

    func validate() throws {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: self.directory, isDirectory: &isFolder), isFolder.boolValue else {
            throw ValidationError("\(self.directory): no such folder (give the folder of your *.lua endpoint scripts)")
        }
        guard (1...(1 << 20)).contains(self.luaMemory) else { throw ValidationError("--lua-memory must be 1...1048576 MiB") }
        guard self.luaBudget > 0 else { throw ValidationError("--lua-budget must be positive") }
        guard self.luaTimeout > 0, self.luaTimeout <= ServerConfiguration.maximumSeconds else {
            throw ValidationError("--lua-timeout must be a number of seconds > 0 and <= \(Int(ServerConfiguration.maximumSeconds))")
        }
        guard self.httpMaxBody > 0 else { throw ValidationError("--http-max-body must be positive") }
        for entry in self.allowNet {
            if let problem = OutboundPolicy.problem(withAllowance: entry) { throw ValidationError(problem) }
        }
        if let caFile = self.caFile, !FileManager.default.isReadableFile(atPath: caFile) {
            throw ValidationError("--ca-file \(caFile): cannot read the file")
        }
        for program in self.allowExec {
            if let problem = OutboundPolicy.problem(withProgram: program) { throw ValidationError(problem) }
        }
        do {
            _ = try self.databases
        } catch {
            throw ValidationError("\(error)")
        }
        guard self.jwksRefresh > 0, self.jwksRefresh <= ServerConfiguration.maximumSeconds else { throw ValidationError("--jwks-refresh must be a positive number of seconds") }
    }
}
