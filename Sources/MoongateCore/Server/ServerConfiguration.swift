import NIOCore

/// Everything `moongate serve` can be told.
public struct ServerConfiguration: Sendable {
    public var host: String
    /// 0 picks a free port (tests); ``MoongateServer/start()`` returns the one bound.
    public var port: Int
    public var scriptsDirectory: String
    public var limits: ScriptLimits
    /// Largest message a client may send, after joining fragments; larger ones close with 1009.
    /// The largest `--max-message-size` or `max_message_size`: NIO's frame decoder takes at most
    /// UInt32.max, and a gibibyte is already far past any message.
    public static let maximumMessageSize = 1 << 30
    /// The longest interval, timeout or grace a flag or script may set, in seconds (about 11
    /// days): far longer ones are mistakes, and past about 9e9 s nanoseconds overflow.
    public static let maximumSeconds: Double = 1e6
    /// Bytes all sessions of this host may hold (`--sessions-max-bytes`).
    public var sessionsMaxBytes = 256 << 20
    /// Sessions this host may hold (`--sessions-max-count`).
    public var sessionsMaxCount = 100_000
    var sessionLimits: SessionTally.Limits {
        SessionTally.Limits(maxBytes: self.sessionsMaxBytes, maxCount: self.sessionsMaxCount)
    }
    public var maxMessageSize: Int
    /// Bytes that may wait to be sent to one client; a client that lets more pile up is too slow
    /// to keep and is closed with 1008, so it cannot grow the host's memory or stall anyone else.
    public var maxOutboundBuffer: Int
    /// Open WebSocket connections the host accepts; past it, upgrades get HTTP 503.
    public var maxConnections: Int
    /// Messages per second one client may send (bursts up to one second's worth); past it the
    /// connection is closed with 1008. 0 turns the limit off.
    public var maxMessageRate: Double
    /// On SIGTERM, how long clients get to answer close 1001 before their sockets are closed.
    public var shutdownGrace: Double
    public var ioThreads: Int
    /// When set, `POST /sessions/{id}/events` requires `Authorization: Bearer <token>`.
    public var sessionToken: String?
    /// SQLite file that keeps session histories across restarts; nil keeps them in memory only.
    public var journalPath: String?
    /// Browser origins allowed to connect, unless an endpoint lists its own `origins`:
    /// `same-origin` (default), `*`, or origins such as `https://app.example.com`.
    public var allowedOrigins: [String]
    /// Seconds a new TCP connection has to complete its HTTP request (slowloris protection).
    public var handshakeTimeout: Double
    /// Open WebSocket connections one remote address may hold.
    public var maxConnectionsPerAddress: Int
    /// PEM certificate chain and private key: with both, the host serves `wss://` and HTTPS.
    public var tlsCertificatePath: String?
    public var tlsKeyPath: String?
    /// A separate listener for `/metrics` (and health): with it, the public one stops serving metrics.
    public var adminPort: Int?
    public var adminHost: String
    /// The web console (`/console`, live over `/console/live`); see ``ConsoleAccess`` for who sees it.
    public var console: Bool
    /// Sessions shared with other hosts through PostgreSQL (`--cluster`); nil: this host alone.
    public var cluster: ClusterConfiguration?
    /// permessage-deflate for clients that offer it (`--compression off` turns it off host-wide).
    public var compression = true

    var tlsFiles: TLSFiles? {
        guard let certificate = self.tlsCertificatePath, let key = self.tlsKeyPath else { return nil }
        return TLSFiles(certificatePath: certificate, keyPath: key)
    }

    public init(
        host: String = "127.0.0.1",
        port: Int = 8080,
        scriptsDirectory: String = "scripts",
        limits: ScriptLimits = ScriptLimits(),
        maxMessageSize: Int = 1 << 20,
        maxOutboundBuffer: Int = 1 << 20,
        maxConnections: Int = 100_000,
        maxMessageRate: Double = 10_000,
        shutdownGrace: Double = 3,
        ioThreads: Int? = nil,
        sessionToken: String? = nil,
        journalPath: String? = nil,
        allowedOrigins: [String] = ["same-origin"],
        handshakeTimeout: Double = 10,
        maxConnectionsPerAddress: Int = 10_000,
        tlsCertificatePath: String? = nil,
        tlsKeyPath: String? = nil,
        adminPort: Int? = nil,
        adminHost: String = "127.0.0.1",
        console: Bool = true
    ) {
        self.host = host
        self.port = port
        self.scriptsDirectory = scriptsDirectory
        self.limits = limits
        self.maxMessageSize = maxMessageSize
        self.maxOutboundBuffer = maxOutboundBuffer
        self.maxConnections = maxConnections
        self.maxMessageRate = maxMessageRate
        self.shutdownGrace = shutdownGrace
        self.ioThreads = ioThreads ?? ProcessorCount.available
        self.sessionToken = sessionToken
        self.journalPath = journalPath
        self.allowedOrigins = allowedOrigins
        self.handshakeTimeout = handshakeTimeout
        self.maxConnectionsPerAddress = maxConnectionsPerAddress
        self.tlsCertificatePath = tlsCertificatePath
        self.tlsKeyPath = tlsKeyPath
        self.adminPort = adminPort
        self.adminHost = adminHost
        self.console = console
    }
}

/// `moongate serve --cluster URL [--cluster-schema NAME] [--node-id NAME]`.
public struct ClusterConfiguration: Sendable {
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE`, with `?sslmode=` and `?host=/socket/dir`.
    public var url: String
    /// The PostgreSQL schema that holds the host's tables, so that they can share a database.
    public var schema: String
    /// This host's name among the nodes; nil: its host name and port.
    public var nodeID: String?

    public init(url: String, schema: String = "moongate", nodeID: String? = nil) {
        self.url = url
        self.schema = schema
        self.nodeID = nodeID
    }
}
