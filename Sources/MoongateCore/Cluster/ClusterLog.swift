import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PostgresNIO

/// The session logs of a cluster, in PostgreSQL. Seqs are assigned by the database, in the
/// statement that stores the event: concurrent appends to one session from any host queue on its
/// row, so no seq is shared or skipped. Hosts hold a copy of the tail of the sessions their
/// clients follow (`Session`), refreshed by `pull` when a wake-up says there is more.
final class ClusterLog: Sendable {
    let client: PostgresClient
    let schema: ClusterSchema
    private let logger: Logger
    let metrics: ClusterMetrics
    private let encodedSettings = NIOLockedValueBox<[SessionSettings: String]>([:])

    init(client: PostgresClient, schema: ClusterSchema, metrics: ClusterMetrics, logger: Logger) {
        self.client = client
        self.schema = schema
        self.metrics = metrics
        self.logger = logger
    }

    struct Committed: Sendable {
        let epoch: String
        let seq: UInt64
        /// The event closed the session (its type is in the session's `closes_on`).
        let closed: Bool
    }

    /// What a pull brought: the session's last seq and state, and events after the seq asked for.
    struct Pulled: Sendable {
        let epoch: String
        let lastSeq: UInt64
        let closedAt: Double?
        let events: [RestoredEvent]
    }

    /// A session's row, and the tail of its log that its bounds keep.
    struct Loaded: Sendable {
        let settings: SessionSettings
        let pulled: Pulled
        /// The seq the tail follows on from (the one before its first event).
        let tailAfter: UInt64
    }

    /// Most events one pull brings; a longer backlog takes more pulls.
    static let pullLimit = 1000

    /// Appends an event (a JSON object without `seq`) to a session, creating it with `settings`
    /// and a new epoch if it does not exist. Whether it closes the session is decided by the
    /// settings the log keeps for it, whichever host appends. Nil if the session is closed.
    func append(session id: String, body: String, type: String?, settings: SessionSettings) async throws -> Committed? {
        let sessions = self.schema.table("sessions")
        let events = self.schema.table("events")
        let settingsJSON = try self.json(settings)
        let query: PostgresQuery = """
            WITH bumped AS (
                INSERT INTO \(unescaped: sessions) AS s (id, epoch, settings, last_seq, closed_at)
                VALUES (
                    \(id), \(Session.makeEpoch()), \(settingsJSON)::jsonb, 1,
                    CASE WHEN coalesce((\(settingsJSON)::jsonb->'closes_on') ? \(type), false) THEN now() END
                )
                ON CONFLICT (id) DO UPDATE
                    SET last_seq = s.last_seq + 1,
                        closed_at = CASE WHEN coalesce((s.settings->'closes_on') ? \(type), false) THEN now() END,
                        active_at = now()
                    WHERE s.closed_at IS NULL
                RETURNING s.id, s.epoch, s.last_seq, s.closed_at IS NOT NULL AS closed, (s.settings->>'history')::bigint AS history
            ), stored AS (
                INSERT INTO \(unescaped: events) (session, seq, body) SELECT id, last_seq, \(body) FROM bumped
            ), trimmed AS (
                DELETE FROM \(unescaped: events) e USING bumped b WHERE e.session = b.id AND e.seq <= b.last_seq - b.history
            )
            SELECT epoch, last_seq, closed FROM bumped
            """
        let rows = try await self.metrics.counting("append") { try await self.client.query(query, logger: self.logger) }
        for try await (epoch, seq, closed) in rows.decode((String, Int64, Bool).self) {
            return Committed(epoch: epoch, seq: UInt64(seq), closed: closed)
        }
        return nil
    }

    /// A session as the cluster holds it, created (empty, with `settings`) when `settings` is
    /// given and it does not exist yet; nil if it does not exist and none are given.
    func load(session id: String, creatingWith settings: SessionSettings?) async throws -> Loaded? {
        let sessions = self.schema.table("sessions")
        let query: PostgresQuery
        if let settings {
            // DO UPDATE, not DO NOTHING: a session created by a concurrent statement is returned
            // too (DO NOTHING would return no row, and a second SELECT's snapshot may not see it).
            query = """
                INSERT INTO \(unescaped: sessions) AS s (id, epoch, settings)
                VALUES (\(id), \(Session.makeEpoch()), \(try self.json(settings))::jsonb)
                ON CONFLICT (id) DO UPDATE SET id = EXCLUDED.id
                RETURNING s.epoch, s.settings::text, s.last_seq, extract(epoch FROM s.closed_at)::float8
                """
        } else {
            query = """
                SELECT epoch, settings::text, last_seq, extract(epoch FROM closed_at)::float8 FROM \(unescaped: sessions) WHERE id = \(id)
                """
        }
        var header: (epoch: String, settings: String, lastSeq: Int64, closedAt: Double?)?
        let rows = try await self.metrics.counting("load") { try await self.client.query(query, logger: self.logger) }
        for try await row in rows.decode((String, String, Int64, Double?).self) {
            header = row
        }
        guard let header else { return nil }
        let settings = try JSONDecoder().decode(SessionSettings.self, from: Data(header.settings.utf8))
        // The newest events the bounds keep, not the oldest the log still has.
        let lastSeq = UInt64(max(0, header.lastSeq))
        let history = UInt64(max(settings.history, 1))
        let tailAfter = lastSeq > history ? lastSeq - history : 0
        guard let pulled = try await self.pull(session: id, after: tailAfter, limit: Int(history)) else { return nil }
        return Loaded(settings: settings, pulled: pulled, tailAfter: tailAfter)
    }

    /// The last seq of each of these sessions that still exists.
    func lastSeqs(of ids: [String]) async throws -> [String: UInt64] {
        guard !ids.isEmpty else { return [:] }
        let sessions = self.schema.table("sessions")
        let rows = try await self.metrics.counting("resync") {
            try await self.client.query("SELECT id, last_seq FROM \(unescaped: sessions) WHERE id = ANY(\(ids))", logger: self.logger)
        }
        var seqs: [String: UInt64] = [:]
        for try await (id, seq) in rows.decode((String, Int64).self) {
            seqs[id] = UInt64(max(0, seq))
        }
        return seqs
    }

    /// The session's last seq and state, and up to `limit` events after `seq` (stamped with their
    /// seqs). Nil if the session no longer exists.
    func pull(session id: String, after seq: UInt64, limit: Int = ClusterLog.pullLimit) async throws -> Pulled? {
        let sessions = self.schema.table("sessions")
        let events = self.schema.table("events")
        let query: PostgresQuery = """
            SELECT s.epoch, s.last_seq, extract(epoch FROM s.closed_at)::float8, e.seq, e.body, extract(epoch FROM e.at)::float8
            FROM \(unescaped: sessions) s
            LEFT JOIN LATERAL (
                SELECT seq, body, at FROM \(unescaped: events) WHERE session = s.id AND seq > \(Int64(clamping: seq))
                ORDER BY seq LIMIT \(limit)
            ) e ON true
            WHERE s.id = \(id)
            ORDER BY e.seq
            """
        var header: (epoch: String, lastSeq: Int64, closedAt: Double?)?
        var pulled: [RestoredEvent] = []
        let started = NIODeadline.now()
        defer { self.metrics.pullDuration.recordNanoseconds((NIODeadline.now() - started).nanoseconds) }
        let rows = try await self.metrics.counting("pull") { try await self.client.query(query, logger: self.logger) }
        for try await (epoch, lastSeq, closedAt, seq, body, at) in rows.decode((String, Int64, Double?, Int64?, String?, Double?).self) {
            header = (epoch, lastSeq, closedAt)
            if let seq, let body, let at {
                let stamped = Session.stamp(ByteBuffer(string: body), seq: UInt64(seq))
                pulled.append(RestoredEvent(seq: UInt64(seq), body: String(buffer: stamped), at: at))
            }
        }
        guard let header else { return nil }
        return Pulled(epoch: header.epoch, lastSeq: UInt64(header.lastSeq), closedAt: header.closedAt, events: pulled)
    }

    /// Closes a session; true if it was open.
    func close(session id: String) async throws -> Bool {
        let sessions = self.schema.table("sessions")
        let query: PostgresQuery = """
            UPDATE \(unescaped: sessions) SET closed_at = now() WHERE id = \(id) AND closed_at IS NULL RETURNING id
            """
        for try await _ in try await self.metrics.counting("close", { try await self.client.query(query, logger: self.logger) }).decode(String.self) {
            return true
        }
        return false
    }

    /// Keeps the sessions this host's clients follow from being freed as idle.
    func touch(sessions ids: [String]) async throws {
        guard !ids.isEmpty else { return }
        let sessions = self.schema.table("sessions")
        try await self.metrics.counting("touch") {
            try await self.client.query("UPDATE \(unescaped: sessions) SET active_at = now() WHERE id = ANY(\(ids))", logger: self.logger)
        }
    }

    /// Applies the bounds and retention of every session, for the whole cluster: events past
    /// `max_age` or beyond `max_bytes`, closed sessions past `retain`, and empty sessions idle for
    /// as long. Any host may run it; running it twice at once is harmless.
    func sweep() async throws {
        try await self.metrics.counting("sweep") { try await self.sweepBounds() }
    }

    private func sweepBounds() async throws {
        let sessions = self.schema.table("sessions")
        let events = self.schema.table("events")
        try await self.client.query(
            """
            DELETE FROM \(unescaped: events) e USING \(unescaped: sessions) s
            WHERE e.session = s.id AND e.at < now() - make_interval(secs => (s.settings->>'max_age')::float8)
            """,
            logger: self.logger
        )
        try await self.client.query(
            """
            DELETE FROM \(unescaped: events) e USING (
                SELECT t.session, t.seq FROM (
                    SELECT session, seq, sum(octet_length(body)) OVER (PARTITION BY session ORDER BY seq DESC) AS tail
                    FROM \(unescaped: events)
                ) t JOIN \(unescaped: sessions) s ON s.id = t.session
                WHERE t.tail > (s.settings->>'max_bytes')::bigint
            ) over WHERE e.session = over.session AND e.seq = over.seq
            """,
            logger: self.logger
        )
        try await self.client.query(
            """
            WITH freed AS (
                DELETE FROM \(unescaped: sessions) s
                WHERE (s.closed_at IS NOT NULL AND s.closed_at < now() - make_interval(secs => (s.settings->>'retain')::float8))
                   OR (s.closed_at IS NULL AND s.active_at < now() - make_interval(secs => (s.settings->>'retain')::float8)
                       AND NOT EXISTS (SELECT 1 FROM \(unescaped: events) e WHERE e.session = s.id))
                RETURNING s.id
            )
            DELETE FROM \(unescaped: events) e USING freed WHERE e.session = freed.id
            """,
            logger: self.logger
        )
        let broadcasts = self.schema.table("broadcasts")
        try await self.client.query(
            "DELETE FROM \(unescaped: broadcasts) WHERE at < now() - interval '1 minute'",
            logger: self.logger
        )
    }

    /// Settings as the log stores them; encoded once per distinct value (an append sends them
    /// in case it creates the session, and JSONEncoder was a visible share of an append's cost).
    private func json(_ settings: SessionSettings) throws -> String {
        if let cached = self.encodedSettings.withLockedValue({ $0[settings] }) {
            return cached
        }
        let encoded = String(decoding: try JSONEncoder().encode(settings), as: UTF8.self)
        self.encodedSettings.withLockedValue { $0[settings] = encoded }
        return encoded
    }
}
