import Dispatch
import NIOConcurrencyHelpers
import NIOCore
import NIOWebSocket

/// What sessions do in a cluster: appends go to the shared log, and the copies this host holds
/// are refreshed by pulls when a wake-up (its own commit, or another host's NOTIFY) says there is
/// more. Delivery to clients is the same as on one host: cursors pull from the copy.
extension SessionStore {
    func commit(
        into id: String,
        object text: ByteBuffer,
        type: String?,
        settings: SessionSettings?,
        cluster: Cluster,
        on loop: any EventLoop
    ) -> EventLoopFuture<CommittedEvent> {
        guard cluster.isReachable else {
            return loop.makeFailedFuture(SessionError.unavailable("the cluster's database is unreachable; the event was not stored"))
        }
        // Used only if this append creates the session; the log's own settings decide the rest.
        let settings = settings ?? self.existing(id)?.settings ?? self.defaultSettings.withLockedValue { $0 }
        let body = String(buffer: text)
        return loop.makeFutureWithTask {
            let committed: ClusterLog.Committed?
            do {
                committed = try await cluster.log.append(session: id, body: body, type: type, settings: settings)
            } catch {
                throw SessionError.unavailable("the event was not stored: \(ClusterStartupCheck.describe(error))")
            }
            guard let committed else { throw SessionError.closed(id) }
            // The next seq of this host's copy: taken in at once. Otherwise (another host's
            // appends came in between) a pull brings everything in order.
            if let copy = self.existing(id), copy.epoch == committed.epoch,
                let subscribers = copy.absorbIfNext(seq: committed.seq, text: text, closed: committed.closed)
            {
                Session.wake(subscribers)
            } else {
                self.pull(id, cluster: cluster)
            }
            cluster.bus.announce(id)
            return CommittedEvent(epoch: committed.epoch, seq: committed.seq)
        }
    }

    func commit(
        into id: String,
        events: [(text: ByteBuffer, type: String?)],
        cluster: Cluster,
        on loop: any EventLoop
    ) -> EventLoopFuture<BatchOutcome> {
        loop.makeFutureWithTask {
            var outcome = BatchOutcome()
            for event in events {
                do {
                    let committed = try await self.commit(into: id, object: event.text, type: event.type, settings: nil, cluster: cluster, on: loop).get()
                    outcome.epoch = committed.epoch
                    outcome.seqs.append(committed.seq)
                } catch {
                    outcome.failure = error as? SessionError ?? .unavailable("\(error)")
                    break
                }
            }
            return outcome
        }
    }

    /// Commits one history's broadcasts one after another, so the log numbers them in the order
    /// they were made; a broadcast that cannot be stored is logged (its endpoint's clients on
    /// every host would otherwise disagree on the history).
    func recordInOrder(_ text: ByteBuffer, history: Session, cluster: Cluster) {
        let first = self.historyWrites.withLockedValue { writes in
            let idle = writes[history.id] == nil
            writes[history.id, default: []].append(text)
            return idle
        }
        guard first else { return }
        let loop = cluster.loop
        Task {
            // The item being committed stays queued until it is done, so a broadcast made
            // meanwhile only queues behind it; taking the next (or going idle) is one locked step.
            var next: ByteBuffer? = text
            while let current = next {
                do {
                    _ = try await self.commit(into: history.id, object: current, type: nil, settings: history.settings, cluster: cluster, on: loop).get()
                } catch {
                    cluster.logger.error("cluster: a broadcast to \(history.id.dropFirst("endpoint:".count))'s history was not stored: \(error)")
                }
                next = self.historyWrites.withLockedValue { writes in
                    writes[history.id]?.removeFirst()
                    guard let first = writes[history.id]?.first else {
                        writes[history.id] = nil
                        return nil
                    }
                    return first
                }
            }
        }
    }

    /// An endpoint's history as the cluster keeps it: this host's copy of the log's, held for as
    /// long as the endpoint is served. Until the log can be read it stays this host's own.
    func clusterHistory(for local: Session, cluster: Cluster, on loop: any EventLoop) async -> Session {
        do {
            let copy = try await self.follow(local.id, settings: local.settings, on: loop).get()
            copy.pin()
            return copy
        } catch {
            cluster.logger.error("cluster: \(local.id.dropFirst("endpoint:".count))'s history is this host's own until PostgreSQL answers: \(error)")
            return local
        }
    }

    /// For a script's `emit`, which returns the seq: blocks the script's own thread (never an I/O
    /// loop) until the commit, at most 5 s.
    func commitAndWait(into id: String, object text: ByteBuffer, type: String?, settings: SessionSettings?) -> Result<UInt64, SessionError> {
        guard let cluster = self.cluster else { return .failure(.unavailable("not in a cluster")) }
        let committed = self.commit(into: id, object: text, type: type, settings: settings, cluster: cluster, on: cluster.loop)
        return Self.waitOnScriptThread(committed).map(\.seq)
    }

    /// For a script's `session_status`: the copy held, else the log's, waiting as `emit` does.
    func statusAndWait(_ id: String) -> SessionStatus? {
        guard let cluster = self.cluster else { return self.existing(id)?.status }
        return (try? Self.waitOnScriptThread(self.lookup(id, on: cluster.loop)).get())??.status
    }

    /// Until the coroutine-based script I/O of issue #15 lets a script suspend instead.
    private static func waitOnScriptThread<Value: Sendable>(_ future: EventLoopFuture<Value>) -> Result<Value, SessionError> {
        let done = DispatchSemaphore(value: 0)
        let outcome = NIOLockedValueBox<Result<Value, SessionError>>(.failure(.unavailable("the cluster's database did not answer within 5 s")))
        future.whenComplete { result in
            outcome.withLockedValue { outcome in
                outcome = result.mapError { $0 as? SessionError ?? .unavailable("\($0)") }
            }
            done.signal()
        }
        _ = done.wait(timeout: .now() + 5)
        return outcome.withLockedValue { $0 }
    }

    func load(_ id: String, creatingWith settings: SessionSettings?, cluster: Cluster, on loop: any EventLoop) -> EventLoopFuture<Session?> {
        guard cluster.isReachable else {
            return loop.makeFailedFuture(SessionError.unavailable("the cluster's database is unreachable"))
        }
        return loop.makeFutureWithTask {
            let loaded: ClusterLog.Loaded?
            do {
                loaded = try await cluster.log.load(session: id, creatingWith: settings)
            } catch {
                throw SessionError.unavailable("session \(id) could not be read: \(ClusterStartupCheck.describe(error))")
            }
            guard let loaded else { return nil }
            let (session, isNew) = self.hold(id, loaded: loaded)
            if isNew {
                // Events committed between the read and `hold` announced a session not held yet.
                self.pull(id, cluster: cluster)
            }
            return session
        }
    }

    func close(_ id: String, cluster: Cluster) {
        Task {
            do {
                if try await cluster.log.close(session: id) {
                    self.pull(id, cluster: cluster)
                    cluster.bus.announce(id)
                }
            } catch {
                cluster.logger.error("cluster: could not close session \(id): \(ClusterStartupCheck.describe(error))")
            }
        }
    }

    /// Brings this host's copy of a session up to date with the log and wakes its clients; nothing
    /// if no copy is held. One pull per session at a time; asked for during one, it runs again.
    func pull(_ id: String, cluster: Cluster, wokenAt: NIODeadline? = nil) {
        guard let session = self.existing(id), session.beginPull(wokenAt: wokenAt) else { return }
        Task {
            var more = true
            while more {
                var full = false
                do {
                    let pulled = try await cluster.log.pull(session: id, after: session.lastSeq)
                    guard let pulled, pulled.epoch == session.epoch else {
                        self.replaced(session, cluster: cluster)
                        while session.endPull(more: false) {}
                        return
                    }
                    let subscribers = session.absorb(pulled)
                    Session.wake(subscribers)
                    if !subscribers.isEmpty, let woken = session.takeWokenAt() {
                        cluster.metrics.wakeToDelivery.recordNanoseconds((NIODeadline.now() - woken).nanoseconds)
                    }
                    full = pulled.events.count >= ClusterLog.pullLimit
                } catch {
                    cluster.logger.warning("cluster: could not pull session \(id): \(ClusterStartupCheck.describe(error))")
                }
                more = session.endPull(more: full)
            }
        }
    }

    /// The log no longer has this copy's session (freed past its retention), or has another
    /// incarnation of it: the copy goes, and its clients are closed with 1012 so that they
    /// reconnect and resume against what the log holds (a `reset`, as for any other epoch).
    func replaced(_ session: Session, cluster: Cluster) {
        guard !session.isPinned else {
            cluster.logger.warning("cluster: the log no longer has \(session.id) as this host holds it")
            return
        }
        self.forget(session)
        for subscriber in session.subscriberList {
            subscriber.close(code: WebSocketErrorCode(codeNumber: 1012), reason: "session replaced; reconnect")
        }
    }

    /// Pulls every held copy the log is ahead of: a wake-up that never came (a NOTIFY lost while
    /// PostgreSQL was up) delays an event by one heartbeat at most.
    func resync(cluster: Cluster) async throws {
        let held = self.all
        let logSeqs = try await cluster.log.lastSeqs(of: held.map(\.id))
        for session in held where (logSeqs[session.id] ?? 0) > session.lastSeq {
            self.pull(session.id, cluster: cluster)
        }
    }

    /// The copy brought up to what the log holds now, before a client joins it: a client resuming
    /// from a seq another host served must not find this copy behind it. While the log cannot be
    /// read, the copy is served as it is.
    func catchUp(_ session: Session, cluster: Cluster, on loop: any EventLoop) -> EventLoopFuture<Session> {
        guard cluster.isReachable else { return loop.makeSucceededFuture(session) }
        return loop.makeFutureWithTask {
            do {
                while let pulled = try await cluster.log.pull(session: session.id, after: session.lastSeq) {
                    Session.wake(session.absorb(pulled))
                    if pulled.events.count < ClusterLog.pullLimit { break }
                }
            } catch {
                cluster.logger.warning("cluster: serving session \(session.id) as held: \(ClusterStartupCheck.describe(error))")
            }
            return session
        }
    }

    /// After a wake-up naming these sessions (nil: every one held).
    func pull(_ ids: [String]?, cluster: Cluster, wokenAt: NIODeadline? = nil) {
        for id in ids ?? self.all.map(\.id) {
            self.pull(id, cluster: cluster, wokenAt: wokenAt)
        }
    }

    /// The sessions this host's clients follow and the histories it serves, for the heartbeat:
    /// the log keeps them from being freed as idle.
    var followed: [String] { self.all.filter { $0.hasSubscribers || $0.isPinned }.map(\.id) }
}
