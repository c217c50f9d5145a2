import Foundation
import Logging
import NIOConcurrencyHelpers
import PostgresNIO

/// The hosts of a cluster, one row each (node id, address, start time, connections, last seen),
/// kept fresh by each host's heartbeat.
final class ClusterNodes: Sendable {
    struct Node: Sendable, Equatable, Encodable {
        let id: String
        let address: String
        let startedAt: Double
        let connections: Int
        let lastSeen: Double

        enum CodingKeys: String, CodingKey {
            case id, address, connections
            case startedAt = "started_at"
            case lastSeen = "last_seen"
        }
    }

    private let client: PostgresClient
    private let schema: ClusterSchema
    /// `--node-id`, else host name and port (known once bound, when the port asked for is 0).
    private let idBox: NIOLockedValueBox<String?>
    /// The nodes as the last heartbeat saw them.
    private let seen = NIOLockedValueBox<[Node]>([])
    private let startedAt = Date()
    private let logger: Logger
    private let metrics: ClusterMetrics

    /// Seconds between heartbeats; a node not seen for three of them is left out of `list`.
    static let interval = Duration.seconds(2)
    static let sweepEvery = 5

    init(client: PostgresClient, schema: ClusterSchema, nodeID: String?, port: Int, metrics: ClusterMetrics, logger: Logger) {
        self.metrics = metrics
        self.client = client
        self.schema = schema
        self.idBox = NIOLockedValueBox(nodeID ?? (port == 0 ? nil : "\(ProcessInfo.processInfo.hostName):\(port)"))
        self.logger = logger
    }

    var id: String { self.idBox.withLockedValue { $0 } ?? ProcessInfo.processInfo.hostName }

    /// The nodes seen within the last three heartbeats, as of the last one.
    var latest: [Node] { self.seen.withLockedValue { $0 } }

    /// Writes this host's row every `interval` until cancelled, touches the sessions its clients
    /// follow, pulls copies the log is ahead of (`resync`), and, on the one host `sweeps` says
    /// leads it, applies the cluster's session bounds every few beats.
    func beat(
        address: String,
        connections: @Sendable () -> Int,
        followed: @Sendable () -> [String],
        resync: @Sendable () async throws -> Void,
        log: ClusterLog,
        sweeps: @Sendable () -> Bool
    ) async {
        self.idBox.withLockedValue { id in
            if id == nil {
                id = "\(ProcessInfo.processInfo.hostName):\(address.split(separator: ":").last ?? "")"
            }
        }
        var beats = 0
        while !Task.isCancelled {
            do {
                try await self.record(address: address, connections: connections())
                try await log.touch(sessions: followed())
                try await resync()
                let nodes = try await self.list()
                self.seen.withLockedValue { $0 = nodes }
                self.metrics.nodes.record(nodes.count)
                // One host sweeps for the cluster: the statement scans every session's events.
                if beats % Self.sweepEvery == 0, sweeps() {
                    try await log.sweep()
                }
            } catch {
                self.metrics.failed("heartbeat")
                self.logger.debug("cluster: heartbeat failed: \(ClusterStartupCheck.describe(error))")
            }
            beats += 1
            try? await Task.sleep(for: Self.interval)
        }
    }

    private func record(address: String, connections: Int) async throws {
        let nodes = self.schema.table("nodes")
        let started = self.startedAt.timeIntervalSince1970
        try await self.client.query(
            """
            INSERT INTO \(unescaped: nodes) (id, address, started_at, connections, last_seen)
            VALUES (\(self.id), \(address), to_timestamp(\(started)), \(connections), now())
            ON CONFLICT (id) DO UPDATE
                SET address = EXCLUDED.address, started_at = EXCLUDED.started_at,
                    connections = EXCLUDED.connections, last_seen = now()
            """,
            logger: self.logger
        )
    }

    /// The nodes seen within the last three heartbeats, by id.
    func list() async throws -> [Node] {
        let nodes = self.schema.table("nodes")
        let rows = try await self.client.query(
            """
            SELECT id, address, extract(epoch FROM started_at)::float8, connections, extract(epoch FROM last_seen)::float8
            FROM \(unescaped: nodes) WHERE last_seen > now() - interval '6 seconds' ORDER BY id
            """,
            logger: self.logger
        )
        var list: [Node] = []
        for try await (id, address, started, connections, seen) in rows.decode((String, String, Double, Int32, Double).self) {
            list.append(Node(id: id, address: address, startedAt: started, connections: Int(connections), lastSeen: seen))
        }
        return list
    }

    /// Removes this host's row, on a clean shutdown.
    func leave() async {
        let nodes = self.schema.table("nodes")
        _ = try? await self.client.query("DELETE FROM \(unescaped: nodes) WHERE id = \(self.id)", logger: self.logger)
    }
}
