import NIOConcurrencyHelpers
import NIOCore

/// Every session by id. Sessions are created on first use (a client connecting or an event
/// emitted) and freed by the sweeper once closed and past retention, or long idle.
final class SessionStore: Sendable {
    private let sessions = NIOLockedValueBox<[String: Session]>([:])
    private let journal = NIOLockedValueBox<SessionJournal?>(nil)
    /// Settings for sessions created where no endpoint says otherwise (the HTTP API, say).
    let defaultSettings = NIOLockedValueBox(SessionSettings())

    func session(_ id: String, creatingWith settings: SessionSettings? = nil) -> Session {
        self.sessions.withLockedValue { sessions in
            if let existing = sessions[id] {
                return existing
            }
            let created = Session(
                id: id,
                settings: settings ?? self.defaultSettings.withLockedValue { $0 },
                journal: self.journal.withLockedValue { $0 }
            )
            sessions[id] = created
            return created
        }
    }

    func existing(_ id: String) -> Session? {
        self.sessions.withLockedValue { $0[id] }
    }

    var count: Int { self.sessions.withLockedValue { $0.count } }

    /// Every session held, for the console.
    var all: [Session] { self.sessions.withLockedValue { Array($0.values) } }

    /// Checks that `text` can be an event (a JSON object without its own `seq`) and returns its
    /// `type`, if that is a plain string (which decides whether it closes the session).
    static func eventType(of text: ByteBuffer) -> Result<String?, SessionError> {
        switch text.withUnsafeReadableBytes({ JSONEnvelope.scan($0) }) {
        case .invalid(let reason): return .failure(.invalid("invalid JSON: \(reason)"))
        case .notAnObject: return .failure(.invalid("an event must be a JSON object"))
        case .object(let envelope):
            guard envelope.seq == nil else {
                return .failure(.invalid("\"seq\" is assigned by the host; remove it from the event"))
            }
            if case .string(let type) = envelope.type {
                return .success(type)
            }
            return .success(nil)
        }
    }

    /// Journals sessions from now on, after restoring those the journal holds.
    func attach(_ journal: SessionJournal) async throws {
        let restored = try await journal.load()
        self.sessions.withLockedValue { sessions in
            for session in restored {
                sessions[session.id] = Session(restoring: session, journal: journal)
            }
        }
        self.journal.withLockedValue { $0 = journal }
    }

    /// Waits until the journal (if any) holds every event appended so far, then closes it.
    func closeJournal() async {
        let journal = self.journal.withLockedValue { journal in
            defer { journal = nil }
            return journal
        }
        await journal?.close()
    }

    /// Appends a JSON object to a session (creating it) and wakes its subscribers.
    func emit(into id: String, object text: ByteBuffer, settings: SessionSettings? = nil) -> Result<UInt64, SessionError> {
        Self.eventType(of: text).flatMap { type in
            self.append(into: id, object: text, type: type, settings: settings).map(\.seq)
        }
    }

    /// Appends an event already checked with `eventType(of:)`; also says when it is safely in
    /// the journal.
    func append(into id: String, object text: ByteBuffer, type: String?, settings: SessionSettings? = nil) -> Result<Session.Appended, SessionError> {
        let session = self.session(id, creatingWith: settings)
        return session.append(object: text, type: type).map { appended in
            appended.wakeSubscribers()
            return appended
        }
    }

    /// Frees expired sessions; returns what is left, for the metrics.
    @discardableResult
    func sweep(now: NIODeadline = .now()) -> (sessions: Int, events: Int, bytes: Int) {
        let all = self.sessions.withLockedValue { Array($0.values) }
        let expired = all.filter { $0.sweep(now: now) }
        let remaining = all.filter { session in !expired.contains { $0 === session } }.map(\.status)
        let totals = (remaining.count, remaining.reduce(0) { $0 + $1.count }, remaining.reduce(0) { $0 + $1.bytes })
        guard !expired.isEmpty else { return totals }
        let journal = self.journal.withLockedValue { $0 }
        self.sessions.withLockedValue { sessions in
            for session in expired where sessions[session.id] === session {
                sessions[session.id] = nil
                journal?.recordFreed(session: session.id)
            }
        }
        return totals
    }
}
