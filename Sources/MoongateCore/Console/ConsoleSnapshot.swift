import Foundation

/// What the console shows, as one JSON message sent to each viewer every second. Counters are
/// totals; the page turns the difference between two snapshots into rates.
struct ConsoleSnapshot: Encodable {
    struct Endpoint: Encodable {
        var path: String
        var script: String?
        var kind: String
        var connections: Int
        var messagesIn: Int
        var messagesOut: Int

        enum CodingKeys: String, CodingKey {
            case path, script, kind, connections
            case messagesIn = "messages_in"
            case messagesOut = "messages_out"
        }
    }

    /// Sessions shown: the most recently active first; the rest are counted only.
    static let sessionsShown = 50

    var type = "console"
    var at: Double
    var uptime: Double
    var connections: Int
    var endpoints: [Endpoint]
    var sessions: [SessionStatus]
    var sessionCount: Int
    var reloads: [HostActivity.Reload]
    var errors: [HostActivity.ScriptFailure]
    var errorCount: Int
    /// In a cluster: this host's node id and the nodes its last heartbeat saw.
    var nodeID: String?
    var nodes: [ClusterNodes.Node]?

    enum CodingKeys: String, CodingKey {
        case type, at, uptime, connections, endpoints, sessions, reloads, errors, nodes
        case sessionCount = "session_count"
        case errorCount = "error_count"
        case nodeID = "node_id"
    }

    init(services: HostServices) {
        let now = Date()
        self.at = now.timeIntervalSince1970
        self.uptime = now.timeIntervalSince(services.activity.startedAt)
        self.connections = services.connections.count
        self.endpoints = services.endpoints.all.map { slot in
            let spec = slot.binding?.spec
            let kind =
                spec?.session != nil ? "session"
                : spec?.history != nil ? "history"
                : spec?.watchEvery != nil ? "watch"
                : "messages"
            return Endpoint(
                path: slot.pattern.description,
                script: spec.map { String($0.where.prefix { $0 != ":" }) },
                kind: kind,
                connections: slot.metrics.tally.connections.load(ordering: .relaxed),
                messagesIn: slot.metrics.tally.messagesIn.load(ordering: .relaxed),
                messagesOut: slot.metrics.tally.messagesOut.load(ordering: .relaxed)
            )
        }.sorted { $0.path < $1.path }
        let sessions = services.sessions.all.map(\.status)
        self.sessionCount = sessions.count
        self.sessions = Array(
            sessions.sorted { ($0.subscribers, $0.lastSeq, $0.session) > ($1.subscribers, $1.lastSeq, $1.session) }
                .prefix(Self.sessionsShown)
        )
        let activity = services.activity.recent
        self.reloads = activity.reloads
        self.errors = activity.errors
        self.errorCount = activity.errorCount
        if let cluster = services.sessions.cluster {
            self.nodeID = cluster.nodes.id
            self.nodes = cluster.nodes.latest
        }
    }

    var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? String(decoding: encoder.encode(self), as: UTF8.self)) ?? #"{"type":"console"}"#
    }
}
