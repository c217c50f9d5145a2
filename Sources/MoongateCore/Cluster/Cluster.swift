import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PostgresNIO

/// This host's part in a cluster over PostgreSQL (`--cluster URL`): the shared session log, the
/// wake-ups between hosts, and this host's row among the nodes. Started before the scripts load,
/// so a database the host cannot use stops it with a clear error.
final class Cluster: Sendable {
    let url: PostgresURL
    let log: ClusterLog
    let bus: ClusterBus
    let nodes: ClusterNodes
    let leadership: ClusterLeadership
    let metrics: ClusterMetrics
    let logger: Logger
    /// Where work for the cluster that has no loop of its own completes (a script's `emit`).
    let loop: any EventLoop
    private let tasks = NIOLockedValueBox<[(task: Task<Void, Never>, awaitedOnStop: Bool)]>([])
    private let pool = NIOLockedValueBox<Task<Void, Never>?>(nil)
    /// Whether the wake-up connection is up: while it is not, appends fail at once (503) instead
    /// of waiting on a database that is gone.
    private let reachableBox = NIOLockedValueBox(true)
    /// Completed when LISTEN is first in place: the host says it is listening only after that,
    /// so nothing another host announces from then on is missed.
    private let firstListen: EventLoopPromise<Void>
    private let firstListenDone = NIOLockedValueBox(false)

    var isReachable: Bool { self.reachableBox.withLockedValue { $0 } }

    private init(
        url: PostgresURL,
        client: PostgresClient,
        schema: ClusterSchema,
        nodeID: String?,
        port: Int,
        metrics: ClusterMetrics,
        loop: any EventLoop,
        logger: Logger
    ) {
        self.url = url
        self.metrics = metrics
        self.log = ClusterLog(client: client, schema: schema, metrics: metrics, logger: logger)
        self.bus = ClusterBus(url: url, client: client, schema: schema, metrics: metrics, loop: loop, logger: logger)
        self.nodes = ClusterNodes(client: client, schema: schema, nodeID: nodeID, port: port, metrics: metrics, logger: logger)
        self.leadership = ClusterLeadership(url: url, schema: schema, loop: loop, logger: logger)
        self.logger = logger
        self.loop = loop
        self.firstListen = loop.makePromise()
    }

    /// Checks that the database can be reached and used, migrates the schema, and starts the pool.
    static func start(
        url text: String,
        schema: String,
        nodeID: String?,
        port: Int,
        metrics: ClusterMetrics,
        loop: any EventLoop,
        logger: Logger
    ) async throws -> Cluster {
        let url = try PostgresURL(text)
        let schema = try ClusterSchema(schema)
        try await ClusterStartupCheck.connect(url, loop: loop, logger: logger)
        var configuration = url.clientConfiguration
        configuration.options.connectTimeout = .seconds(3)
        configuration.options.maximumConnections = 10
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        let cluster = Cluster(url: url, client: client, schema: schema, nodeID: nodeID, port: port, metrics: metrics, loop: loop, logger: logger)
        cluster.pool.withLockedValue { $0 = Task { await client.run() } }
        do {
            let applied = try await schema.migrate(client, logger: logger)
            if !applied.isEmpty {
                logger.info("cluster: schema \(schema.name) migrated", metadata: ["versions": "\(applied)"])
            }
        } catch {
            await cluster.stop()
            throw ClusterStartupCheck.Failure(reason: "could not create the tables in schema \(schema.name) of \(url): \(ClusterStartupCheck.describe(error))")
        }
        return cluster
    }

    /// Starts listening to the other hosts: `wake` gets the sessions to pull (nil: all), `relay`
    /// the broadcasts for this host's clients.
    func startListening(
        wake: @escaping @Sendable ([String]?) -> Void,
        relay: @escaping @Sendable (_ path: String, _ text: String, _ snapshot: Bool) -> Void
    ) {
        let receiver = ClusterBus.Receiver(
            listening: {
                if !self.firstListenDone.exchange(true) {
                    self.firstListen.succeed()
                }
                if !self.reachableBox.exchange(true) {
                    self.logger.info("cluster: PostgreSQL reachable again at \(self.url); catching up")
                }
                wake(nil)
            },
            lost: { error in
                self.metrics.failed("listen")
                if self.reachableBox.exchange(false) {
                    self.logger.error("cluster: lost PostgreSQL at \(self.url): \(ClusterStartupCheck.describe(error)); appends fail until it is back")
                }
            },
            wake: wake,
            relay: relay
        )
        // Not awaited on stop: a notification sequence may not end on cancellation; the loops'
        // shutdown closes its connection.
        self.spawn(awaitedOnStop: false) { await self.bus.listen(receiver) }
        self.spawn { await self.leadership.run() }
    }

    /// Waits until the first LISTEN is in place (at most `timeout`).
    func waitUntilListening(timeout: TimeAmount) async throws {
        do {
            try await self.firstListen.futureResult.orTimeout(timeout, on: self.loop).get()
        } catch {
            throw ClusterStartupCheck.Failure(reason: "could not LISTEN for the other hosts at \(self.url) within \(timeout.nanoseconds / 1_000_000_000) s")
        }
    }

    /// Keeps this host's node row and the sessions its clients follow fresh, and sweeps.
    func startHeartbeat(
        address: String,
        connections: @escaping @Sendable () -> Int,
        followed: @escaping @Sendable () -> [String],
        resync: @escaping @Sendable () async throws -> Void
    ) {
        self.spawn {
            await self.nodes.beat(address: address, connections: connections, followed: followed, resync: resync, log: self.log) {
                self.leadership.leads("the session sweep")
            }
        }
    }

    private func spawn(awaitedOnStop: Bool = true, _ work: @escaping @Sendable () async -> Void) {
        let task = Task { await work() }
        self.tasks.withLockedValue { $0.append((task, awaitedOnStop)) }
    }

    /// Stops listening, the heartbeat and the leader locks, removes this host's node row, then
    /// closes the pool. Called after the scripts have retired, so their last appends are in.
    func stop() async {
        let tasks = self.tasks.withLockedValue { tasks in
            defer { tasks.removeAll() }
            return tasks
        }
        tasks.forEach { $0.task.cancel() }
        // The heartbeat and the leader locks end at their next sleep: the node row is not
        // written again after it is removed below.
        for (task, awaited) in tasks where awaited {
            await task.value
        }
        if !self.firstListenDone.exchange(true) {
            self.firstListen.fail(ClusterStartupCheck.Failure(reason: "stopped"))
        }
        await self.nodes.leave()
        let pool = self.pool.withLockedValue { pool in
            defer { pool = nil }
            return pool
        }
        pool?.cancel()
        await pool?.value
    }
}

extension NIOLockedValueBox where Value == Bool {
    /// Sets the flag and returns what it was, in one step.
    fileprivate func exchange(_ value: Bool) -> Bool {
        self.withLockedValue { current in
            defer { current = value }
            return current
        }
    }
}
