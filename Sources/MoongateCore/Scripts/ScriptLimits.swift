/// What one script may use: bounds that keep a runaway script from taking the host with it.
public struct ScriptLimits: Sendable {
    /// Bytes one Lua state may hold.
    public var memoryBytes: Int
    /// VM instructions one call into Lua may run (a handler, a poll, a timer, a load).
    public var instructionBudget: Int32
    /// Directories that `read_file`, `read_json` and `file_mtime` may read, besides the scripts' own.
    public var readableDirectories: [String]

    public init(memoryBytes: Int = 64 << 20, instructionBudget: Int32 = 50_000_000, readableDirectories: [String] = []) {
        self.memoryBytes = memoryBytes
        self.instructionBudget = instructionBudget
        self.readableDirectories = readableDirectories
    }
}
