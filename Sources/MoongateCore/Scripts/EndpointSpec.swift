/// What a script declared with `endpoint { ... }`, as the host needs it outside Lua; read and
/// checked by `EndpointSchema`, which also holds the defaults.
public struct EndpointSpec: Sendable, Equatable {
    public var path: String
    /// `file:line` of the `endpoint` call.
    public var `where`: String
    public var initial: Bool
    /// Opening a connection needs no script code: the initial payload, if any, is `initialText`.
    public var fixedOpen: Bool
    public var initialText: String?
    public var watchEvery: Double?
    /// Message types with an `on` handler, sorted.
    public var handlerTypes: [String]
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
    /// In a cluster, one host polls (`watch = { leader = true }`) and relays what changes.
    public var watchLeader: Bool = false
    /// Whether clients may negotiate permessage-deflate (`compression = false` turns it off).
    public var compression: Bool = true

    /// One line for `moongate check`.
    public var summary: String {
        var parts = [self.path, "(\(self.where))"]
        if self.initial { parts.append("initial") }
        if let every = self.watchEvery { parts.append("watch every \(every.formattedSeconds)\(self.watchLeader ? " (one host of a cluster)" : "")") }
        if !self.handlerTypes.isEmpty { parts.append("on: " + self.handlerTypes.joined(separator: ", ")) }
        if self.onText { parts.append("on_text") }
        if self.onBinary { parts.append("on_binary") }
        if let every = self.heartbeatEvery { parts.append("heartbeat every \(every.formattedSeconds)") }
        if let session = self.session { parts.append("session :\(session.param) (history \(session.history))") }
        if let history = self.history { parts.append("history \(history.history)") }
        if self.authorize { parts.append("authorize") }
        if let origins = self.origins { parts.append("origins: " + (origins.isEmpty ? "none" : origins.joined(separator: " "))) }
        if !self.compression { parts.append("compression off") }
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
        self == self.rounded() && abs(self) < 1e15 ? "\(Int(self))s" : "\(self)s"
    }
}
