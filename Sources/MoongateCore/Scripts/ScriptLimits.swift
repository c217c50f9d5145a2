/// What one script may use: bounds that keep a runaway script from taking the host with it.
public struct ScriptLimits: Sendable {
    /// Bytes one Lua state may hold.
    public var memoryBytes: Int
    /// VM instructions one call into Lua may run (a handler, a poll, a timer, a load).
    public var instructionBudget: Int32
    /// Directories that `read_file`, `read_json` and `file_mtime` may read, besides the scripts' own.
    public var readableDirectories: [String]
    /// Seconds one callback may take from start to finish, waiting on I/O included (`--lua-timeout`).
    public var callTimeout: Double
    /// What scripts may reach outside the host.
    public var outbound: OutboundPolicy

    public init(
        memoryBytes: Int = 64 << 20,
        instructionBudget: Int32 = 50_000_000,
        readableDirectories: [String] = [],
        callTimeout: Double = 30,
        outbound: OutboundPolicy = OutboundPolicy()
    ) {
        self.outbound = outbound
        self.memoryBytes = memoryBytes
        self.instructionBudget = instructionBudget
        self.readableDirectories = readableDirectories
        self.callTimeout = callTimeout
    }
}
