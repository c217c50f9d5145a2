import Foundation
import Logging
import NIOCore
import NIOPosix
import SQLiteNIO

/// Session histories kept in SQLite (`--journal PATH`), so a restart of the host loses no buffered
/// event and resumes serve the same epochs and seqs. Writes are queued on one thread in the order
/// they were made; `flush()` waits for all of them.
final class SessionJournal: Sendable {
    private let connection: SQLiteConnection
    private let threadPool: NIOThreadPool
    private let logger: Logger

    private init(connection: SQLiteConnection, threadPool: NIOThreadPool, logger: Logger) {
        self.connection = connection
        self.threadPool = threadPool
        self.logger = logger
    }

    static func open(path: String, eventLoop: any EventLoop, logger: Logger) async throws -> SessionJournal {
        // One thread: statements run in exactly the order they were issued.
        let threadPool = NIOThreadPool(numberOfThreads: 1)
        threadPool.start()
        let connection = try await SQLiteConnection.open(
            storage: .file(path: path),
            threadPool: threadPool,
            logger: logger,
            on: eventLoop
        )
        let journal = SessionJournal(connection: connection, threadPool: threadPool, logger: logger)
        for statement in Self.schema {
            _ = try await connection.query(statement)
        }
        return journal
    }

    private static let schema = [
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=NORMAL",
        """
        CREATE TABLE IF NOT EXISTS sessions (
            id TEXT PRIMARY KEY, epoch TEXT NOT NULL, settings TEXT NOT NULL,
            last_seq INTEGER NOT NULL DEFAULT 0, closed_at REAL
        )
        """,
        """
        CREATE TABLE IF NOT EXISTS events (
            session TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL, at REAL NOT NULL,
            PRIMARY KEY (session, seq)
        )
        """,
    ]

    /// Everything journaled, to rebuild the sessions from.
    func load() async throws -> [RestoredSession] {
        let sessions = try await self.connection.query("SELECT id, epoch, settings, last_seq, closed_at FROM sessions")
        var restored: [RestoredSession] = []
        for row in sessions {
            guard let id = row.column("id")?.string, let epoch = row.column("epoch")?.string,
                let settingsText = row.column("settings")?.string
            else {
                self.logger.error("session journal: skipping a session row without id, epoch or settings")
                continue
            }
            let settings: SessionSettings
            do {
                settings = try JSONDecoder().decode(SessionSettings.self, from: Data(settingsText.utf8))
            } catch {
                self.logger.error("session journal: skipping session \(id): its settings do not decode: \(error)")
                continue
            }
            let events = try await self.connection.query(
                "SELECT seq, body, at FROM events WHERE session = ? ORDER BY seq",
                [.text(id)]
            )
            restored.append(
                RestoredSession(
                    id: id,
                    epoch: epoch,
                    settings: settings,
                    lastSeq: UInt64(row.column("last_seq")?.integer ?? 0),
                    closedAt: row.column("closed_at")?.double,
                    events: events.compactMap { event in
                        guard let seq = event.column("seq")?.integer, let body = event.column("body")?.string,
                            let at = event.column("at")?.double
                        else { return nil }
                        return RestoredEvent(seq: UInt64(seq), body: body, at: at)
                    }
                )
            )
        }
        return restored
    }

    func recordSession(_ session: Session) {
        let settings = (try? String(decoding: JSONEncoder().encode(session.settings), as: UTF8.self)) ?? "{}"
        self.run(
            "INSERT OR REPLACE INTO sessions (id, epoch, settings, last_seq, closed_at) VALUES (?, ?, ?, 0, NULL)",
            [.text(session.id), .text(session.epoch), .text(settings)]
        )
    }

    @discardableResult
    func recordEvent(session: String, seq: UInt64, body: ByteBuffer, at time: Double) -> EventLoopFuture<Void> {
        self.run(
            "INSERT OR REPLACE INTO events (session, seq, body, at) VALUES (?, ?, ?, ?)",
            [.text(session), .integer(Int(seq)), .text(String(buffer: body)), .float(time)]
        )
        return self.run("UPDATE sessions SET last_seq = ? WHERE id = ?", [.integer(Int(seq)), .text(session)])
    }

    func recordEviction(session: String, through seq: UInt64) {
        self.run("DELETE FROM events WHERE session = ? AND seq <= ?", [.text(session), .integer(Int(seq))])
    }

    func recordClosed(session: String, at time: Double) {
        self.run("UPDATE sessions SET closed_at = ? WHERE id = ?", [.float(time), .text(session)])
    }

    func recordFreed(session: String) {
        self.run("DELETE FROM events WHERE session = ?", [.text(session)])
        self.run("DELETE FROM sessions WHERE id = ?", [.text(session)])
    }

    /// Waits until every write issued so far is in the database.
    func flush() async {
        _ = try? await self.connection.query("SELECT 1")
    }

    func close() async {
        await self.flush()
        try? await self.connection.close()
        try? await self.threadPool.shutdownGracefully()
    }

    @discardableResult
    private func run(_ sql: String, _ binds: [SQLiteData]) -> EventLoopFuture<Void> {
        let logger = self.logger
        let future = self.connection.query(sql, binds).map { _ in }
        future.whenFailure { error in
            logger.error("session journal write failed: \(error)", metadata: ["sql": "\(sql)"])
        }
        return future
    }
}

/// A session as the journal or the cluster's log held it.
struct RestoredSession: Sendable {
    let id: String
    let epoch: String
    let settings: SessionSettings
    let lastSeq: UInt64
    /// Wall-clock seconds since 1970.
    let closedAt: Double?
    let events: [RestoredEvent]
}

/// One stored event: its text with its seq stamped in, and when it was appended.
struct RestoredEvent: Sendable {
    let seq: UInt64
    let body: String
    /// Wall-clock seconds since 1970.
    let at: Double
}
