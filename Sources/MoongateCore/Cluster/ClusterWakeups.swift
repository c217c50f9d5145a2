import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PostgresNIO

/// Wake-ups between the hosts of a cluster over LISTEN/NOTIFY. They only say "session X has new
/// events": the receiving host pulls them from the log, so a lost or repeated wake-up costs a
/// delay or a query, never an event. Listening uses one dedicated connection, never one of the
/// pool's; a lost connection is re-established with backoff, and every session held is pulled once
/// it listens again. Announcements made while one is being sent go out together in the next.
final class ClusterWakeups: Sendable {
    private let url: ClusterURL
    private let client: PostgresClient
    private let channel: String
    /// Tells this process's own announcements apart from other hosts'.
    let instance: String
    private let loop: any EventLoop
    private let logger: Logger
    private let outgoing = NIOLockedValueBox(Outgoing())

    private struct Outgoing {
        var pending: [String] = []
        var queued: Set<String> = []
        var sending = false
    }

    /// What one NOTIFY carries.
    struct Payload: Codable {
        var from: String
        /// Nil: every session (a list that did not fit).
        var sessions: [String]?
    }

    struct ListenEnded: Error, CustomStringConvertible {
        var description: String { "the server ended the LISTEN connection" }
    }

    /// PostgreSQL's limit on a NOTIFY payload is 8000 bytes.
    static let payloadLimit = 7900

    init(url: ClusterURL, client: PostgresClient, schema: ClusterSchema, loop: any EventLoop, logger: Logger) {
        self.url = url
        self.client = client
        self.channel = schema.wakeChannel
        self.instance = Session.makeEpoch()
        self.loop = loop
        self.logger = logger
    }

    /// Listens until cancelled. `listening` runs each time LISTEN is in place (pull everything
    /// then), `lost` when the connection is gone, `wake` with the sessions another host appended
    /// to (nil: all of them).
    func listen(
        listening: @escaping @Sendable () -> Void,
        lost: @escaping @Sendable (any Error) -> Void,
        wake: @escaping @Sendable ([String]?) -> Void
    ) async {
        var backoff = Duration.milliseconds(250)
        while !Task.isCancelled {
            do {
                let configuration = try self.url.connectionConfiguration()
                let connection = try await PostgresConnection.connect(
                    on: self.loop,
                    configuration: configuration,
                    id: 0,
                    logger: self.logger
                ).get()
                backoff = .milliseconds(250)
                do {
                    try await self.consume(connection, listening: listening, wake: wake)
                } catch {
                    try? await connection.close()
                    throw error
                }
                try? await connection.close()
                if Task.isCancelled { return }
                lost(ListenEnded())
            } catch {
                if Task.isCancelled { return }
                lost(error)
            }
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(5))
        }
    }

    private func consume(
        _ connection: PostgresConnection,
        listening: @Sendable () -> Void,
        wake: @Sendable ([String]?) -> Void
    ) async throws {
        try await connection.listen(on: self.channel) { notifications in
            listening()
            for try await notification in notifications {
                guard let payload = try? JSONDecoder().decode(Payload.self, from: Data(notification.payload.utf8)) else {
                    self.logger.warning("cluster: ignoring a wake-up that is not Moongate's: \(notification.payload.prefix(80))")
                    continue
                }
                if payload.from != self.instance {
                    wake(payload.sessions)
                }
            }
        }
    }

    /// Tells the other hosts that `session` has new events, batched with whatever else is waiting.
    func announce(_ session: String) {
        let start = self.outgoing.withLockedValue { outgoing in
            if outgoing.queued.insert(session).inserted {
                outgoing.pending.append(session)
            }
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
            let batch: [String] = self.outgoing.withLockedValue { outgoing in
                defer {
                    outgoing.pending.removeAll()
                    outgoing.queued.removeAll()
                }
                if outgoing.pending.isEmpty {
                    outgoing.sending = false
                }
                return outgoing.pending
            }
            guard !batch.isEmpty else { return }
            for payload in Self.payloads(batch, from: self.instance) {
                do {
                    try await self.client.query("SELECT pg_notify(\(self.channel), \(payload))", logger: self.logger)
                } catch {
                    // The events are committed; hosts that missed this pull them when they next
                    // hear of the session, or all of them when they listen again.
                    self.logger.warning("cluster: could not send a wake-up: \(String(reflecting: error))")
                }
            }
        }
    }

    /// The batch as NOTIFY payloads within PostgreSQL's limit; one that names no session (all of
    /// them) if a single id is too long to fit.
    static func payloads(_ sessions: [String], from instance: String, limit: Int = ClusterWakeups.payloadLimit) -> [String] {
        let encoder = JSONEncoder()
        func encoded(_ sessions: [String]?) -> String {
            String(decoding: (try? encoder.encode(Payload(from: instance, sessions: sessions))) ?? Data(), as: UTF8.self)
        }
        var payloads: [String] = []
        var current: [String] = []
        var size = encoded([]).utf8.count
        for session in sessions {
            let cost = encoded([session]).utf8.count - encoded([]).utf8.count + 1
            if cost > limit {
                return [encoded(nil)]
            }
            if size + cost > limit {
                payloads.append(encoded(current))
                current = []
                size = encoded([]).utf8.count
            }
            current.append(session)
            size += cost
        }
        if !current.isEmpty {
            payloads.append(encoded(current))
        }
        return payloads
    }
}
