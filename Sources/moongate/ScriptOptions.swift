import ArgumentParser
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

    var limits: ScriptLimits {
        ScriptLimits(memoryBytes: self.luaMemory << 20, instructionBudget: self.luaBudget, readableDirectories: self.allowRead)
    }

    func validate() throws {
        guard self.luaMemory > 0 else { throw ValidationError("--lua-memory must be at least 1 MiB") }
        guard self.luaBudget > 0 else { throw ValidationError("--lua-budget must be positive") }
    }
}
