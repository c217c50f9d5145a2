import NIOConcurrencyHelpers
import NIOCore

/// Every session by id. Sessions are created on first use (a client connecting or an event
/// emitted) and freed by the sweeper once closed and past retention, or long idle.
final class SessionStore: Sendable {
    private let sessions = NIOLockedValueBox<[String: Session]>([:])
    private let journal = NIOLockedValueBox<SessionJournal?>(nil)
    private let clusterBox = NIOLockedValueBox<Cluster?>(nil)
    /// In a cluster: history broadcasts waiting for the one before them to commit, by history.
    let historyWrites = NIOLockedValueBox<[String: [ByteBuffer]]>([:])
    /// Settings for sessions created where no endpoint says otherwise (the HTTP API, say).
    let defaultSettings = NIOLockedValueBox(SessionSettings())
    /// What all sessions hold, and the host-wide bounds on it.
    let tally = SessionTally()

    func session(_ id: String, creatingWith settings: SessionSettings? = nil) -> Session {
        self.sessions.withLockedValue { sessions in
            if let existing = sessions[id] {
                return existing
            }
            let created = self.makeSession(id, settings: settings)
            sessions[id] = created
            return created
        }
    }

    /// The session, created unless the host already holds `--sessions-max-count` of them or the
    /// first event (`firstEventBytes`) would pass `--sessions-max-bytes`: a refused append leaves
    /// no empty session behind.
    func admittedSession(_ id: String, creatingWith settings: SessionSettings? = nil, firstEventBytes: Int = 0) -> Result<Session, SessionError> {
        self.sessions.withLockedValue { sessions in
            if let existing = sessions[id] {
                return .success(existing)
            }
            guard self.tally.admitsSession(whileHolding: sessions.count) else {
                return .failure(self.tally.refusal(.count))
            }
            guard self.tally.admits(firstEventBytes) else {
                return .failure(self.tally.refusal(.bytes))
            }
            let created = self.makeSession(id, settings: settings)
            sessions[id] = created
            return .success(created)
        }
    }

    private func makeSession(_ id: String, settings: SessionSettings?) -> Session {
        Session(
            id: id,
            settings: settings ?? self.defaultSettings.withLockedValue { $0 },
            journal: self.journal.withLockedValue { $0 },
            tally: self.tally
        )
    }

    /// The shared log, when this host is part of a cluster; `SessionStore+Cluster` holds what
    /// changes then.
    var cluster: Cluster? { self.clusterBox.withLockedValue { $0 } }

    func attach(_ cluster: Cluster) {
        self.clusterBox.withLockedValue { $0 = cluster }
    }

    /// A copy of a session from the cluster's log, unless one is held already (two clients of a
    /// new session joining at once): the one held wins.
    func hold(_ id: String, loaded: ClusterLog.Loaded) -> (session: Session, isNew: Bool) {
        self.sessions.withLockedValue { sessions in
            if let existing = sessions[id] {
                return (existing, false)
            }
            let restored = RestoredSession(
                id: id,
                epoch: loaded.pulled.epoch,
                settings: loaded.settings,
                lastSeq: loaded.tailAfter,
                closedAt: nil,
                events: []
            )
            let session = Session(restoring: restored, journal: nil)
            _ = session.absorb(loaded.pulled)
            sessions[id] = session
            return (session, true)
        }
    }

    /// Drops a copy the cluster's log no longer has (freed, or replaced by a new incarnation).
    func forget(_ session: Session) {
        self.sessions.withLockedValue { sessions in
            if sessions[session.id] === session {
                sessions[session.id] = nil
            }
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
                sessions[session.id] = Session(restoring: session, journal: journal, tally: self.tally)
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

    /// Appends a JSON object to a session (creating it) and wakes its subscribers, for a script:
    /// in a cluster this waits for the commit (see `commitAndWait`).
    func emit(into id: String, object text: ByteBuffer, settings: SessionSettings? = nil) -> Result<UInt64, SessionError> {
        Self.eventType(of: text).flatMap { type in
            if self.cluster != nil {
                return self.commitAndWait(into: id, object: text, type: type, settings: settings)
            }
            return self.append(into: id, object: text, type: type, settings: settings).map(\.seq)
        }
    }

    /// What appending a batch came to: the seqs stored, in order, and what stopped the rest.
    struct BatchOutcome: Sendable {
        var epoch: String?
        var seqs: [UInt64] = []
        var failure: SessionError?
    }

    /// Appends events already checked with `eventType(of:)`, in order, and completes once they
    /// are safely stored: in the journal or the cluster's log, if there is one.
    func commit(into id: String, events: [(text: ByteBuffer, type: String?)], on loop: any EventLoop) -> EventLoopFuture<BatchOutcome> {
        if let cluster = self.cluster {
            return self.commit(into: id, events: events, cluster: cluster, on: loop)
        }
        var outcome = BatchOutcome()
        var journaled: EventLoopFuture<Void>?
        for event in events {
            switch self.append(into: id, object: event.text, type: event.type) {
            case .failure(let error):
                outcome.failure = error
            case .success(let appended):
                outcome.seqs.append(appended.seq)
                journaled = appended.journaled ?? journaled
            }
            if outcome.failure != nil { break }
        }
        outcome.epoch = self.existing(id)?.epoch
        let appended = outcome
        // The journal writes in order: once the last is in, all are.
        guard let journaled else { return loop.makeSucceededFuture(appended) }
        return journaled.hop(to: loop).map { appended }.recover { error in
            BatchOutcome(epoch: appended.epoch, seqs: appended.seqs, failure: .notDurable("the events were appended but could not be journaled: \(error)"))
        }
    }

    /// A session by id, for reading: in a cluster, from the log when this host holds no copy.
    func lookup(_ id: String, on loop: any EventLoop) -> EventLoopFuture<Session?> {
        if let session = self.existing(id) {
            return loop.makeSucceededFuture(session)
        }
        guard let cluster = self.cluster else { return loop.makeSucceededFuture(nil) }
        return self.load(id, creatingWith: nil, cluster: cluster, on: loop)
    }

    /// The session a client follows, created if needed: in a cluster, loaded from the log.
    func follow(_ id: String, settings: SessionSettings, on loop: any EventLoop) -> EventLoopFuture<Session> {
        guard let cluster = self.cluster else {
            // A client naming a new session creates it: within --sessions-max-count like an append.
            return loop.makeCompletedFuture(self.admittedSession(id, creatingWith: settings).mapError { $0 as any Error })
        }
        if let session = self.existing(id) {
            session.touch()
            return self.catchUp(session, cluster: cluster, on: loop)
        }
        return self.load(id, creatingWith: settings, cluster: cluster, on: loop).flatMapThrowing { session in
            guard let session else { throw SessionError.unavailable("session \(id) could not be created") }
            return session
        }
    }

    /// A broadcast that goes into an endpoint's history: appended and delivered through the
    /// history's cursors; in a cluster, committed to the log in the order broadcast.
    func record(_ text: ByteBuffer, inHistory history: Session) {
        if let cluster = self.cluster {
            self.recordInOrder(text, history: history, cluster: cluster)
        } else if case .success(let appended) = history.append(object: text, type: nil) {
            appended.wakeSubscribers()
        }
    }

    /// Closes a session so that it takes no more events.
    func close(_ id: String) {
        if let cluster = self.cluster {
            self.close(id, cluster: cluster)
        } else {
            self.existing(id)?.close()
        }
    }

    /// Appends an event already checked with `eventType(of:)`; also says when it is safely in
    /// the journal.
    func append(into id: String, object text: ByteBuffer, type: String?, settings: SessionSettings? = nil) -> Result<Session.Appended, SessionError> {
        // The seq the event is stamped with adds at most this much to it.
        let stamped = text.readableBytes + 28
        return self.admittedSession(id, creatingWith: settings, firstEventBytes: stamped).flatMap { session in
            session.append(object: text, type: type).map { appended in
                appended.wakeSubscribers()
                return appended
            }
        }
    }

    /// Frees expired sessions; returns what is left, for the metrics.
    @discardableResult
    func sweep(now: NIODeadline = .now()) -> (sessions: Int, events: Int, bytes: Int) {
        let all = self.sessions.withLockedValue { Array($0.values) }
        let isCopy = self.cluster != nil
        let expired = all.filter { $0.sweep(now: now, isCopy: isCopy) }
        let remaining = all.filter { session in !expired.contains { $0 === session } }.map(\.status)
        let totals = (remaining.count, remaining.reduce(0) { $0 + $1.count }, remaining.reduce(0) { $0 + $1.bytes })
        self.tally.settle(bytes: totals.2)
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
