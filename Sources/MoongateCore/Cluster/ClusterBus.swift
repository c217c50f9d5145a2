import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PostgresNIO

/// What the hosts of a cluster tell one another over LISTEN/NOTIFY: "session X has new events"
/// (the receiving host pulls them from the log, so a lost or repeated wake-up costs a delay or a
/// query, never an event) and plain broadcasts to relay to their clients (at most once: they are
/// not stored, but for one too large for a NOTIFY, which waits in a table for a minute).
///
/// Listening uses one dedicated connection, never one of the pool's; a lost connection is
/// re-established with backoff, and every session held is pulled once it listens again. Sending
/// is one task at a time, so broadcasts arrive in the order they were made; what is queued while
/// one NOTIFY is on its way goes out together in the next.
final class ClusterBus: Sendable {
    private let url: PostgresURL
    private let client: PostgresClient
    private let schema: ClusterSchema
    /// Tells this process's own notifications apart from other hosts'.
    let instance: String
    private let loop: any EventLoop
    private let logger: Logger
    private let metrics: ClusterMetrics
    private let outgoing = NIOLockedValueBox(Outgoing())

    private struct Outgoing {
        var items: [Item] = []
        var queuedSessions: Set<String> = []
        var sending = false
    }

    enum Item: Sendable, Equatable {
        case session(String)
        /// `snapshot`: a leader watcher's new value, which new clients anywhere get first.
        case broadcast(path: String, text: String, snapshot: Bool)
    }

    /// What one NOTIFY carries.
    struct Payload: Codable, Equatable {
        var from: String
        var sessions: [String]?
        /// Every session held: a session id too long for a NOTIFY was announced.
        var everySession: Bool?
        var broadcasts: [Relayed]?

        enum CodingKeys: String, CodingKey {
            case from, sessions, broadcasts
            case everySession = "every_session"
        }
    }

    /// A broadcast for the clients of the endpoints at `path`: its text, or the row that holds it.
    struct Relayed: Codable, Equatable {
        var path: String
        var text: String?
        var stored: Int64?
        var snapshot: Bool?
    }

    struct ListenEnded: Error, CustomStringConvertible {
        var description: String { "the server ended the LISTEN connection" }
    }

    /// PostgreSQL's limit on a NOTIFY payload is 8000 bytes.
    static let payloadLimit = 7900

    init(url: PostgresURL, client: PostgresClient, schema: ClusterSchema, metrics: ClusterMetrics, loop: any EventLoop, logger: Logger) {
        self.metrics = metrics
        self.url = url
        self.client = client
        self.schema = schema
        self.instance = Session.makeEpoch()
        self.loop = loop
        self.logger = logger
    }

    /// What the host does with what other hosts say.
    struct Receiver: Sendable {
        /// LISTEN is in place (again): pull everything held.
        var listening: @Sendable () -> Void
        var lost: @Sendable (any Error) -> Void
        /// Sessions to pull; nil: every one held.
        var wake: @Sendable ([String]?) -> Void
        /// A broadcast to deliver to this host's clients of the endpoints at a path.
        var relay: @Sendable (_ path: String, _ text: String, _ snapshot: Bool) -> Void
    }

    /// Listens until cancelled.
    func listen(_ receiver: Receiver) async {
        var backoff = Duration.milliseconds(250)
        while !Task.isCancelled {
            do {
                let connection = try await PostgresConnection.connect(
                    on: self.loop,
                    configuration: try self.url.connectionConfiguration(),
                    id: 0,
                    logger: self.logger
                ).get()
                backoff = .milliseconds(250)
                do {
                    try await self.consume(connection, receiver)
                } catch {
                    try? await connection.close()
                    throw error
                }
                try? await connection.close()
                if Task.isCancelled { return }
                receiver.lost(ListenEnded())
            } catch {
                if Task.isCancelled { return }
                receiver.lost(error)
            }
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(5))
        }
    }

    /// How often the LISTEN connection is asked to answer, and how long it has: a connection that
    /// went silent (a network that drops packets, a frozen server) is closed and counted as lost,
    /// so appends fail at once instead of waiting on it.
    static let probeInterval = TimeAmount.seconds(2)
    static let probeTimeout = TimeAmount.seconds(3)

    private func consume(_ connection: PostgresConnection, _ receiver: Receiver) async throws {
        let probe = Task { await self.probe(connection) }
        defer { probe.cancel() }
        try await connection.listen(on: self.schema.wakeChannel) { notifications in
            receiver.listening()
            for try await notification in notifications {
                guard let payload = try? JSONDecoder().decode(Payload.self, from: Data(notification.payload.utf8)) else {
                    self.logger.warning("cluster: ignoring a notification that is not Moongate's: \(notification.payload.prefix(80))")
                    continue
                }
                guard payload.from != self.instance else { continue }
                if payload.everySession == true {
                    receiver.wake(nil)
                } else if let sessions = payload.sessions, !sessions.isEmpty {
                    receiver.wake(sessions)
                }
                // In order, and each before the next notification: a stored one is fetched first.
                for relayed in payload.broadcasts ?? [] {
                    let snapshot = relayed.snapshot ?? false
                    if let text = relayed.text {
                        receiver.relay(relayed.path, text, snapshot)
                    } else if let stored = relayed.stored, let text = await self.fetchStored(stored) {
                        receiver.relay(relayed.path, text, snapshot)
                    }
                }
            }
        }
    }

    private func probe(_ connection: PostgresConnection) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .nanoseconds(Self.probeInterval.nanoseconds))
            guard !Task.isCancelled, !connection.isClosed else { return }
            let deadline = self.loop.scheduleTask(in: Self.probeTimeout) {
                self.logger.warning("cluster: PostgreSQL did not answer within 3 s; reconnecting")
                connection.close().whenFailure { _ in }
            }
            _ = try? await connection.query("SELECT 1", logger: self.logger)
            deadline.cancel()
        }
    }

    /// Tells the other hosts that `session` has new events, batched with whatever else is waiting.
    func announce(_ session: String) {
        self.enqueue(.session(session))
    }

    /// Has the other hosts deliver a broadcast to their clients of the endpoints at `path`.
    func relay(path: String, text: String, snapshot: Bool = false) {
        self.enqueue(.broadcast(path: path, text: text, snapshot: snapshot))
    }

    private func enqueue(_ item: Item) {
        let start = self.outgoing.withLockedValue { outgoing in
            if case .session(let id) = item {
                guard outgoing.queuedSessions.insert(id).inserted else { return false }
            }
            outgoing.items.append(item)
            guard !outgoing.sending else { return false }
            outgoing.sending = true
            return true
        }
        if start {
            Task { await self.send() }
        }
    }

    private func send() async {
        while true {
            let items: [Item] = self.outgoing.withLockedValue { outgoing in
                defer {
                    outgoing.items.removeAll()
                    outgoing.queuedSessions.removeAll()
                }
                if outgoing.items.isEmpty {
                    outgoing.sending = false
                }
                return outgoing.items
            }
            guard !items.isEmpty else { return }
            var stored: [Int: Int64] = [:]
            for (index, item) in items.enumerated() {
                guard case .broadcast(let path, let text, let snapshot) = item else { continue }
                if snapshot {
                    await self.keepSnapshot(path: path, text: text)
                }
                if !Self.fits(item, from: self.instance) {
                    stored[index] = await self.store(path: path, text: text)
                }
            }
            for payload in Self.payloads(items, from: self.instance, stored: stored) {
                do {
                    try await self.client.query("SELECT pg_notify(\(self.schema.wakeChannel), \(payload))", logger: self.logger)
                } catch {
                    // Session events are committed: hosts that missed this pull them when they
                    // next hear of the session, or all of them when they listen again. A plain
                    // broadcast is lost for the other hosts (at most once).
                    self.metrics.failed("notify")
            self.logger.warning("cluster: could not notify the other hosts: \(ClusterStartupCheck.describe(error))")
                }
            }
        }
    }

    /// A broadcast too large for a NOTIFY waits in a table; nil if it could not be stored.
    private func store(path: String, text: String) async -> Int64? {
        let table = self.schema.table("broadcasts")
        do {
            let rows = try await self.client.query(
                "INSERT INTO \(unescaped: table) (path, body) VALUES (\(path), \(text)) RETURNING id",
                logger: self.logger
            )
            for try await id in rows.decode(Int64.self) {
                return id
            }
        } catch {
            self.metrics.failed("store")
            self.logger.warning("cluster: could not store a broadcast for the other hosts: \(ClusterStartupCheck.describe(error))")
        }
        return nil
    }

    /// A leader watcher's latest value, for hosts that start after it changed.
    private func keepSnapshot(path: String, text: String) async {
        let table = self.schema.table("snapshots")
        do {
            try await self.client.query(
                """
                INSERT INTO \(unescaped: table) (path, body) VALUES (\(path), \(text))
                ON CONFLICT (path) DO UPDATE SET body = EXCLUDED.body, at = now()
                """,
                logger: self.logger
            )
        } catch {
            self.metrics.failed("snapshot")
            self.logger.warning("cluster: could not keep the snapshot of \(path): \(ClusterStartupCheck.describe(error))")
        }
    }

    /// The latest value a leader watcher of `path` relayed, if any.
    func snapshot(of path: String) async -> String? {
        let table = self.schema.table("snapshots")
        return await self.body("SELECT body FROM \(unescaped: table) WHERE path = \(path)", operation: "snapshot", what: "the snapshot of \(path)")
    }

    private func fetchStored(_ id: Int64) async -> String? {
        let table = self.schema.table("broadcasts")
        return await self.body("SELECT body FROM \(unescaped: table) WHERE id = \(id)", operation: "fetch", what: "a relayed broadcast")
    }

    /// The `body` column of the query's first row; nil (logged and counted) if it failed.
    private func body(_ query: PostgresQuery, operation: String, what: String) async -> String? {
        do {
            let rows = try await self.client.query(query, logger: self.logger)
            for try await body in rows.decode(String.self) {
                return body
            }
        } catch {
            self.metrics.failed(operation)
            self.logger.warning("cluster: could not read \(what): \(ClusterStartupCheck.describe(error))")
        }
        return nil
    }

    private static func encoded(_ payload: Payload) -> String {
        String(decoding: (try? JSONEncoder().encode(payload)) ?? Data(), as: UTF8.self)
    }

    static func fits(_ item: Item, from instance: String, limit: Int = ClusterBus.payloadLimit) -> Bool {
        var payload = Payload(from: instance)
        switch item {
        case .session(let id): payload.sessions = [id]
        case .broadcast(let path, let text, let snapshot): payload.broadcasts = [Relayed(path: path, text: text, snapshot: snapshot ? true : nil)]
        }
        return Self.encoded(payload).utf8.count <= limit
    }

    /// The items as NOTIFY payloads within PostgreSQL's limit, broadcasts in their order. A session
    /// id too long to fit becomes "every session"; a broadcast too long to fit is sent as the row
    /// `stored` names for it (dropped if it has none).
    static func payloads(_ items: [Item], from instance: String, stored: [Int: Int64] = [:], limit: Int = ClusterBus.payloadLimit) -> [String] {
        var payloads: [String] = []
        var current = Payload(from: instance)
        var isEmpty = true
        func add(_ change: (inout Payload) -> Void) {
            var candidate = current
            change(&candidate)
            if !isEmpty, Self.encoded(candidate).utf8.count > limit {
                payloads.append(Self.encoded(current))
                candidate = Payload(from: instance)
                change(&candidate)
            }
            current = candidate
            isEmpty = false
        }
        for (index, item) in items.enumerated() {
            switch item {
            case .session(let id):
                if Self.fits(item, from: instance, limit: limit) {
                    add { $0.sessions = ($0.sessions ?? []) + [id] }
                } else {
                    add { $0.everySession = true }
                }
            case .broadcast(let path, let text, let snapshot):
                let relayed: Relayed
                if Self.fits(item, from: instance, limit: limit) {
                    relayed = Relayed(path: path, text: text, snapshot: snapshot ? true : nil)
                } else if let row = stored[index] {
                    relayed = Relayed(path: path, stored: row, snapshot: snapshot ? true : nil)
                } else {
                    continue
                }
                add { $0.broadcasts = ($0.broadcasts ?? []) + [relayed] }
            }
        }
        if !isEmpty {
            payloads.append(Self.encoded(current))
        }
        return payloads
    }
}
