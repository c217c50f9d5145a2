/// How a session's history is bounded and when it ends; declared per endpoint with
/// `session = { ... }` (read by `EndpointSchema`), host defaults otherwise. Codable for the
/// journal, which stores each session's settings.
public struct SessionSettings: Sendable, Hashable, Codable {
    /// Path parameter (or, failing that, query parameter) that names the session.
    public var param: String = "session"
    /// Events kept, at most.
    public var history: Int = 1000
    /// Bytes of event text kept, at most.
    public var maxBytes: Int = 1 << 20
    /// Seconds an event is kept, at most.
    public var maxAge: Double = 3600
    /// Seconds a closed session stays readable before it is freed.
    public var retain: Double = 600
    /// Event types that close the session.
    public var closesOn: [String] = ["complete", "error"]
    /// Seconds a client without `last_seq` in its URL has to send `{"type":"resume"}` as its first
    /// message before delivery starts with every event still held.
    public var resumeWait: Double = 0.5

    public init() {}

    enum CodingKeys: String, CodingKey {
        case param, history, retain
        case maxBytes = "max_bytes"
        case maxAge = "max_age"
        case closesOn = "closes_on"
        case resumeWait = "resume_wait"
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(self.param, forKey: .param)
        try container.encode(self.history, forKey: .history)
        try container.encode(self.maxBytes, forKey: .maxBytes)
        try container.encode(self.maxAge, forKey: .maxAge)
        try container.encode(self.retain, forKey: .retain)
        try container.encode(self.closesOn, forKey: .closesOn)
        try container.encode(self.resumeWait, forKey: .resumeWait)
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let defaults = SessionSettings()
        self.param = try container.decodeIfPresent(String.self, forKey: .param) ?? defaults.param
        self.history = try container.decodeIfPresent(Int.self, forKey: .history) ?? defaults.history
        self.maxBytes = try container.decodeIfPresent(Int.self, forKey: .maxBytes) ?? defaults.maxBytes
        self.maxAge = try container.decodeIfPresent(Double.self, forKey: .maxAge) ?? defaults.maxAge
        self.retain = try container.decodeIfPresent(Double.self, forKey: .retain) ?? defaults.retain
        self.closesOn = try container.decodeIfPresent([String].self, forKey: .closesOn) ?? defaults.closesOn
        self.resumeWait = try container.decodeIfPresent(Double.self, forKey: .resumeWait) ?? defaults.resumeWait
    }
}
