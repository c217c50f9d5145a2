import NIOCore

/// Everything `moongate serve` can be told.
public struct ServerConfiguration: Sendable {
    public var host: String
    /// 0 picks a free port (tests); ``MoongateServer/start()`` returns the one bound.
    public var port: Int
    public var scriptsDirectory: String
    public var limits: ScriptLimits
    /// Largest message a client may send, after joining fragments; larger ones close with 1009.
    public var maxMessageSize: Int
    /// On SIGTERM, how long clients get to answer close 1001 before their sockets are closed.
    public var shutdownGrace: Double
    public var ioThreads: Int

    public init(
        host: String = "127.0.0.1",
        port: Int = 8080,
        scriptsDirectory: String = "scripts",
        limits: ScriptLimits = ScriptLimits(),
        maxMessageSize: Int = 1 << 20,
        shutdownGrace: Double = 3,
        ioThreads: Int? = nil
    ) {
        self.host = host
        self.port = port
        self.scriptsDirectory = scriptsDirectory
        self.limits = limits
        self.maxMessageSize = maxMessageSize
        self.shutdownGrace = shutdownGrace
        self.ioThreads = ioThreads ?? System.coreCount
    }
}
