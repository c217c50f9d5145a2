import Logging
import NIOConcurrencyHelpers
import NIOCore
import PostgresNIO

/// Which host of a cluster runs each cluster-wide duty (a `leader = true` watcher, the session
/// sweep): the one holding its PostgreSQL advisory lock. The locks are held on one dedicated connection, so they go when the host does
/// (PostgreSQL releases a dead session's locks) and another host, trying every second, takes over.
/// Losing the connection loses every lock at once; the host stops polling until it holds them again.
final class ClusterLeadership: Sendable {
    private let url: PostgresURL
    private let schema: ClusterSchema
    private let loop: any EventLoop
    private let logger: Logger
    private let state = NIOLockedValueBox(State())

    private struct State {
        var wanted: Set<String> = []
        var held: Set<String> = []
    }

    static let retryInterval = Duration.seconds(1)

    init(url: PostgresURL, schema: ClusterSchema, loop: any EventLoop, logger: Logger) {
        self.url = url
        self.schema = schema
        self.loop = loop
        self.logger = logger
    }

    /// Whether this host runs `duty` now (a name for the log, e.g. "the watcher of /feed"); the
    /// first ask makes the host try for it.
    func leads(_ duty: String) -> Bool {
        self.state.withLockedValue { state in
            state.wanted.insert(duty)
            return state.held.contains(duty)
        }
    }

    /// Tries for the locks not held until cancelled, every `retryInterval`.
    func run() async {
        var connection: PostgresConnection?
        while !Task.isCancelled {
            do {
                if connection == nil || connection?.isClosed == true {
                    self.loseAll()
                    connection = try await PostgresConnection.connect(
                        on: self.loop,
                        configuration: try self.url.connectionConfiguration(),
                        id: 1,
                        logger: self.logger
                    ).get()
                }
                if let connection {
                    try await self.tryForLocks(on: connection)
                }
            } catch {
                self.loseAll()
                try? await connection?.close()
                connection = nil
            }
            try? await Task.sleep(for: Self.retryInterval)
        }
        try? await connection?.close()
        self.loseAll()
    }

    private func tryForLocks(on connection: PostgresConnection) async throws {
        let (wanted, held) = self.state.withLockedValue { ($0.wanted, $0.held) }
        // A query even with nothing to try for: a dead connection shows, and the locks with it.
        if wanted.subtracting(held).isEmpty {
            try await connection.query("SELECT 1", logger: self.logger)
            return
        }
        for duty in wanted.subtracting(held).sorted() {
            let key = "moongate \(self.schema.name) \(duty)"
            let rows = try await connection.query("SELECT pg_try_advisory_lock(hashtext(\(key)))", logger: self.logger)
            for try await acquired in rows.decode(Bool.self) where acquired {
                self.state.withLockedValue { _ = $0.held.insert(duty) }
                self.logger.info("cluster: this host now runs \(duty)")
            }
        }
    }

    private func loseAll() {
        let lost = self.state.withLockedValue { state in
            defer { state.held.removeAll() }
            return state.held
        }
        for duty in lost.sorted() {
            self.logger.warning("cluster: no longer runs \(duty) (lost PostgreSQL)")
        }
    }
}
