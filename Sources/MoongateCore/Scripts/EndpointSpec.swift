/// What a script declared with `endpoint { ... }`, as the host needs it outside Lua.
public struct EndpointSpec: Sendable, Equatable, Decodable {
    public var path: String
    /// `file:line` of the `endpoint` call.
    public var `where`: String
    public var initial: Bool
    /// Opening a connection needs no script code: the initial payload, if any, is `initialText`.
    public var fixedOpen: Bool
    public var initialText: String?
    public var watchEvery: Double?
    /// Message types with an `on` handler, space-separated (cjson cannot tell an empty list from `{}`).
    public var handlers: String?
    public var onText: Bool
    public var onBinary: Bool
    public var pingEvery: Double
    public var pingTimeout: Double
    public var heartbeatEvery: Double?
    public var maxMessageSize: Int?
    /// Present when the endpoint streams a session per client (`session = { ... }`).
    public var session: SessionSettings?
    /// Present when the endpoint keeps a history of its broadcasts (`history = { ... }`), so a
    /// client that reconnects with `last_seq` gets what it missed.
    public var history: SessionSettings?
    /// The endpoint has an `authorize` hook, called before the upgrade.
    public var authorize: Bool
    /// Origins browsers may connect from; nil: the host's `--allowed-origin` setting.
    public var origins: [String]?

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.path = try container.decode(String.self, forKey: .path)
        self.where = try container.decode(String.self, forKey: .where)
        self.initial = try container.decode(Bool.self, forKey: .initial)
        self.fixedOpen = try container.decodeIfPresent(Bool.self, forKey: .fixedOpen) ?? false
        self.initialText = try container.decodeIfPresent(String.self, forKey: .initialText)
        self.watchEvery = try container.decodeIfPresent(Double.self, forKey: .watchEvery)
        self.handlers = try container.decodeIfPresent(String.self, forKey: .handlers)
        self.onText = try container.decode(Bool.self, forKey: .onText)
        self.onBinary = try container.decode(Bool.self, forKey: .onBinary)
        self.pingEvery = try container.decode(Double.self, forKey: .pingEvery)
        self.pingTimeout = try container.decode(Double.self, forKey: .pingTimeout)
        self.heartbeatEvery = try container.decodeIfPresent(Double.self, forKey: .heartbeatEvery)
        self.maxMessageSize = try container.decodeIfPresent(Int.self, forKey: .maxMessageSize)
        self.session = try container.decodeIfPresent(SessionSettings.self, forKey: .session)
        self.history = try container.decodeIfPresent(SessionSettings.self, forKey: .history)
        self.authorize = try container.decodeIfPresent(Bool.self, forKey: .authorize) ?? false
        // cjson cannot tell {} from []: an explicitly empty list arrives as `no_origins`.
        let noOrigins = try container.decodeIfPresent(Bool.self, forKey: .noOrigins) ?? false
        self.origins = noOrigins ? [] : try container.decodeIfPresent([String].self, forKey: .origins)
    }

    enum CodingKeys: String, CodingKey {
        case path, `where`, initial, handlers
        case watchEvery = "watch_every"
        case onText = "on_text"
        case onBinary = "on_binary"
        case pingEvery = "ping_every"
        case pingTimeout = "ping_timeout"
        case heartbeatEvery = "heartbeat_every"
        case maxMessageSize = "max_message_size"
        case session, authorize, origins, history
        case noOrigins = "no_origins"
        case fixedOpen = "fixed_open"
        case initialText = "initial_text"
    }

    public var handlerTypes: [String] {
        self.handlers?.split(separator: " ").map(String.init) ?? []
    }

    /// One line for `moongate check`.
    public var summary: String {
        var parts = [self.path, "(\(self.where))"]
        if self.initial { parts.append("initial") }
        if let every = self.watchEvery { parts.append("watch every \(every.formattedSeconds)") }
        if !self.handlerTypes.isEmpty { parts.append("on: " + self.handlerTypes.joined(separator: ", ")) }
        if self.onText { parts.append("on_text") }
        if self.onBinary { parts.append("on_binary") }
        if let every = self.heartbeatEvery { parts.append("heartbeat every \(every.formattedSeconds)") }
        if let session = self.session { parts.append("session :\(session.param) (history \(session.history))") }
        if let history = self.history { parts.append("history \(history.history)") }
        if self.authorize { parts.append("authorize") }
        if let origins = self.origins { parts.append("origins: " + (origins.isEmpty ? "none" : origins.joined(separator: " "))) }
        parts.append(
            self.pingEvery > 0
                ? "ping every \(self.pingEvery.formattedSeconds), timeout \(self.pingTimeout.formattedSeconds)"
                : "pings off"
        )
        return parts.joined(separator: "  ")
    }
}

extension Double {
    var formattedSeconds: String {
        self == self.rounded() ? "\(Int(self))s" : "\(self)s"
    }
}
