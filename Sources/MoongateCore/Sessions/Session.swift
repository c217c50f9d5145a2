import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOWebSocket
import WebSocketDeflate

/// One event of a session: its JSON text, with the host's `"seq"` as its first field.
struct SessionEvent: Sendable {
    let seq: UInt64
    let text: ByteBuffer
    let time: NIODeadline
}

/// Why an event was not appended.
enum SessionError: Error, Equatable, CustomStringConvertible {
    case closed(String)
    case invalid(String)
    /// Where the event would be stored cannot take it now (the cluster's database is down, say):
    /// nothing was accepted.
    case unavailable(String)
    /// Appended and delivered, but not made durable as promised (a journal write failed).
    case notDurable(String)
    /// The host's bound on what sessions hold (`--sessions-max-bytes`, `--sessions-max-count`):
    /// nothing was accepted.
    case full(String)

    var description: String {
        switch self {
        case .closed(let id): return "session \(id) is closed"
        case .invalid(let reason), .unavailable(let reason), .notDurable(let reason), .full(let reason): return reason
        }
    }
}

/// An event safely stored, and where: its session's epoch and its seq.
struct CommittedEvent: Sendable, Equatable {
    let epoch: String
    let seq: UInt64
}

/// A named stream of events with sequence numbers 1, 2, 3, ... and an epoch fixed at creation.
/// Its bounded history outlives every connection: a disconnect never deletes or closes it.
/// Thread-safe; appends are serialised by its lock, so seqs are gap-free and ordered.
final class Session: Sendable {
    let id: String
    let epoch: String
    let settings: SessionSettings
    private let journal: SessionJournal?
    /// The host-wide count of bytes held, which this session's changes go into.
    private let tally: SessionTally?
    private let state: NIOLockedValueBox<State>

    private struct State {
        var events = CircularBuffer<SessionEvent>()
        var lastSeq: UInt64 = 0
        var bytes = 0
        var closedAt: NIODeadline?
        var lastActivity: NIODeadline
        var subscribers: [UInt64: Connection] = [:]
        /// In a cluster: a pull of this session is under way, and whether another was asked for
        /// meanwhile.
        var pulling = false
        var pullAgain = false
        /// The earliest wake-up not yet followed by a delivery, for the wake-to-delivery metric.
        var wokenAt: NIODeadline?
        /// In a cluster: an endpoint's history, kept while the endpoint is served.
        var pinned = false
        /// Held events' payloads compressed for permessage-deflate, by seq: made once, on the
        /// first delivery to a client that takes compressed frames, and shared by the rest.
        var compressed: [UInt64: ByteBuffer] = [:]

        /// Holds `event`, the newest: every way an event comes in (append, journal, pull) ends here.
        mutating func push(_ event: SessionEvent) {
            self.events.append(event)
            self.bytes += event.text.readableBytes
            self.lastSeq = event.seq
        }
    }

    init(id: String, settings: SessionSettings, journal: SessionJournal? = nil, tally: SessionTally? = nil, now: NIODeadline = .now()) {
        self.id = id
        self.epoch = Self.makeEpoch()
        self.settings = settings
        self.journal = journal
        self.tally = tally
        self.state = NIOLockedValueBox(State(lastActivity: now))
        journal?.recordSession(self)
    }

    /// A session as the journal kept it across a restart, or as the cluster's log holds it: same
    /// epoch, same seqs.
    init(restoring restored: RestoredSession, journal: SessionJournal?, tally: SessionTally? = nil, now: NIODeadline = .now()) {
        self.id = restored.id
        self.epoch = restored.epoch
        self.settings = restored.settings
        self.journal = journal
        self.tally = tally
        let wallNow = Date().timeIntervalSince1970
        func monotonic(_ wall: Double) -> NIODeadline {
            now - .interval(max(0, wallNow - wall))
        }
        var state = State(lastActivity: now)
        for event in restored.events {
            let text = ByteBuffer(string: event.body)
            state.push(SessionEvent(seq: event.seq, text: text, time: monotonic(event.at)))
        }
        state.lastSeq = max(restored.lastSeq, restored.events.last?.seq ?? 0)
        state.closedAt = restored.closedAt.map(monotonic)
        tally?.add(state.bytes)
        self.state = NIOLockedValueBox(state)
    }

    /// Runs `body` on the state and tells the host-wide tally how the bytes held changed.
    private func changing<Result>(_ body: (inout State) -> Result) -> Result {
        let (result, delta) = self.state.withLockedValue { state in
            let before = state.bytes
            let result = body(&state)
            return (result, state.bytes - before)
        }
        self.tally?.add(delta)
        return result
    }

    /// 32 hex digits, always (each half zero-padded).
    static func makeEpoch() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<2).map { _ in
            let half = String(generator.next() as UInt64, radix: 16)
            return String(repeating: "0", count: 16 - half.count) + half
        }.joined()
    }

    struct Appended {
        func wakeSubscribers() { Session.wake(self.subscribers) }

        let seq: UInt64
        let subscribers: [Connection]
        /// Completes once the event is in the journal (nil without one).
        let journaled: EventLoopFuture<Void>?
    }

    /// Lets each subscriber pull what is new: one hop per I/O loop, as an outbound batch makes.
    static func wake(_ subscribers: [Connection]) {
        if subscribers.count == 1, let only = subscribers.first {
            only.channel.eventLoop.execute { only.deliverSessionEvents() }
            return
        }
        var byLoop: [ObjectIdentifier: (loop: any EventLoop, subscribers: [Connection])] = [:]
        for subscriber in subscribers {
            let loop = subscriber.channel.eventLoop
            byLoop[ObjectIdentifier(loop), default: (loop, [])].subscribers.append(subscriber)
        }
        for (loop, subscribers) in byLoop.values {
            loop.execute {
                subscribers.forEach { $0.deliverSessionEvents() }
            }
        }
    }

    /// Appends a JSON object (already validated as one) and returns its seq and who to notify.
    func append(object text: ByteBuffer, type: String?, now: NIODeadline = .now()) -> Result<Appended, SessionError> {
        self.changing { state in
            if state.closedAt != nil {
                return .failure(.closed(self.id))
            }
            let seq = state.lastSeq + 1
            let event = SessionEvent(seq: seq, text: Self.stamp(text, seq: seq), time: now)
            if let tally = self.tally {
                let added = event.text.readableBytes
                guard tally.admits(added - self.bytesEvicted(byAdding: added, to: state, now: now)) else {
                    return .failure(tally.refusal(.bytes))
                }
            }
            state.push(event)
            state.lastActivity = now
            // Journaled under the lock, so the journal sees events in seq order.
            let wallNow = Date().timeIntervalSince1970
            let journaled = self.journal?.recordEvent(session: self.id, seq: seq, body: event.text, at: wallNow)
            if let type, self.settings.closesOn.contains(type) {
                state.closedAt = now
                self.journal?.recordClosed(session: self.id, at: wallNow)
            }
            self.evict(&state, now: now)
            return .success(Appended(seq: seq, subscribers: Array(state.subscribers.values), journaled: journaled))
        }
    }

    /// `events` as frames for clients that negotiated permessage-deflate: each compressed once for
    /// all of them (the first to need one compresses it, outside the lock), RSV1 set.
    func compressedFrames(_ events: ArraySlice<SessionEvent>) -> [WebSocketFrame] {
        let known = self.state.withLockedValue { state in events.map { state.compressed[$0.seq] } }
        var made: [(UInt64, ByteBuffer)] = []
        let frames = zip(events, known).map { event, payload -> WebSocketFrame in
            if let payload {
                return WebSocketFrame(fin: true, rsv1: true, opcode: .text, data: payload)
            }
            guard let compressed = MessageDeflate.compress(event.text, windowBits: 15) else { return .text(event.text) }
            made.append((event.seq, compressed))
            return WebSocketFrame(fin: true, rsv1: true, opcode: .text, data: compressed)
        }
        if !made.isEmpty {
            self.state.withLockedValue { state in
                let firstHeld = state.events.first?.seq ?? .max
                for (seq, payload) in made where seq >= firstHeld {
                    state.compressed[seq] = payload
                }
            }
        }
        return frames
    }

    /// Events after `seq`, and whether some events right after it are no longer held (a gap).
    func events(after seq: UInt64, limit: Int = .max) -> (events: [SessionEvent], gap: Bool, lastSeq: UInt64) {
        self.state.withLockedValue { state in
            guard seq < state.lastSeq else { return ([], false, state.lastSeq) }
            let firstHeld = state.events.first?.seq ?? (state.lastSeq + 1)
            let gap = seq + 1 < firstHeld
            let start = seq + 1 < firstHeld ? 0 : Int(seq + 1 - firstHeld)
            let from = state.events.index(state.events.startIndex, offsetBy: start)
            let count = min(limit, state.events.distance(from: from, to: state.events.endIndex))
            let to = state.events.index(from, offsetBy: count)
            return (Array(state.events[from..<to]), gap, state.lastSeq)
        }
    }

    var lastSeq: UInt64 { self.state.withLockedValue { $0.lastSeq } }

    var isClosed: Bool { self.state.withLockedValue { $0.closedAt != nil } }

    func close(now: NIODeadline = .now()) {
        self.state.withLockedValue { state in
            if state.closedAt == nil {
                state.closedAt = now
                self.journal?.recordClosed(session: self.id, at: Date().timeIntervalSince1970)
            }
        }
    }

    /// In a cluster: takes in what a pull of the log brought, in seq order after what is held
    /// (events the log no longer has are dropped here too), and returns who to wake.
    func absorb(_ pulled: ClusterLog.Pulled, now: NIODeadline = .now()) -> [Connection] {
        self.changing { state in
            let before = (state.lastSeq, state.closedAt != nil)
            let wallNow = Date().timeIntervalSince1970
            for event in pulled.events where event.seq > state.lastSeq {
                if event.seq != state.lastSeq + 1 {
                    // The log dropped events this copy never had: keep the rest contiguous.
                    state.events.removeAll()
                    state.compressed.removeAll()
                    state.bytes = 0
                }
                let text = ByteBuffer(string: event.body)
                let time = now - .interval(max(0, wallNow - event.at))
                state.push(SessionEvent(seq: event.seq, text: text, time: time))
            }
            if pulled.lastSeq > state.lastSeq, pulled.events.isEmpty {
                state.events.removeAll()
                state.compressed.removeAll()
                state.bytes = 0
                state.lastSeq = pulled.lastSeq
            }
            if pulled.closedAt != nil, state.closedAt == nil {
                state.closedAt = now
            }
            self.evict(&state, now: now)
            return (state.lastSeq, state.closedAt != nil) == before ? [] : Array(state.subscribers.values)
        }
    }

    /// In a cluster: this host's own commit, taken in at once when it is the next seq (so a read
    /// right after the append sees it); otherwise the pull that follows brings it.
    func absorbIfNext(seq: UInt64, text: ByteBuffer, closed: Bool, now: NIODeadline = .now()) -> [Connection]? {
        self.changing { state in
            guard seq == state.lastSeq + 1 else { return nil }
            let stamped = Self.stamp(text, seq: seq)
            state.push(SessionEvent(seq: seq, text: stamped, time: now))
            if closed, state.closedAt == nil {
                state.closedAt = now
            }
            self.evict(&state, now: now)
            return Array(state.subscribers.values)
        }
    }

    /// Restarts the idle clock of a cluster's copy (a client is about to join it).
    func touch(now: NIODeadline = .now()) {
        self.state.withLockedValue { $0.lastActivity = now }
    }

    var isPinned: Bool { self.state.withLockedValue { $0.pinned } }

    /// True if the caller should pull now; false if a pull is under way (it will run once more).
    func beginPull(wokenAt: NIODeadline? = nil) -> Bool {
        self.state.withLockedValue { state in
            if let wokenAt, state.wokenAt == nil {
                state.wokenAt = wokenAt
            }
            guard !state.pulling else {
                state.pullAgain = true
                return false
            }
            state.pulling = true
            return true
        }
    }

    /// The wake-up the clients just woken were waiting on, if any (taken once).
    func takeWokenAt() -> NIODeadline? {
        self.state.withLockedValue { state in
            defer { state.wokenAt = nil }
            return state.wokenAt
        }
    }

    /// True if another pull was asked for while this one ran: the caller pulls again.
    func endPull(more: Bool) -> Bool {
        self.state.withLockedValue { state in
            if more || state.pullAgain {
                state.pullAgain = false
                return true
            }
            state.pulling = false
            return false
        }
    }

    /// Keeps a cluster's copy held (and so refreshed) with no client following it.
    func pin() {
        self.state.withLockedValue { $0.pinned = true }
    }

    var hasSubscribers: Bool { self.state.withLockedValue { !$0.subscribers.isEmpty } }

    var subscriberList: [Connection] { self.state.withLockedValue { Array($0.subscribers.values) } }

    func subscribe(_ connection: Connection) {
        self.state.withLockedValue { $0.subscribers[connection.id] = connection }
    }

    func unsubscribe(_ connection: Connection) {
        self.state.withLockedValue { state in
            state.subscribers[connection.id] = nil
            state.lastActivity = .now()
        }
    }

    static let copyIdleTime = TimeAmount.seconds(30)

    /// Drops events past their age; true once the session may be freed: closed and past its
    /// retention, or idle (no subscriber, nothing held) for as long.
    /// A cluster's copy may go as soon as no client of this host has followed it for a while:
    /// the log keeps the session.
    func sweep(now: NIODeadline, isCopy: Bool = false) -> Bool {
        self.changing { state in
            self.evict(&state, now: now)
            if isCopy {
                return !state.pinned && state.subscribers.isEmpty && !state.pulling && now - state.lastActivity >= Self.copyIdleTime
            }
            let retention = TimeAmount.interval(self.settings.retain)
            if let closedAt = state.closedAt {
                return now - closedAt >= retention
            }
            return state.subscribers.isEmpty && state.events.isEmpty && now - state.lastActivity >= retention
        }
    }

    var status: SessionStatus {
        self.state.withLockedValue { state in
            SessionStatus(
                session: self.id,
                state: state.closedAt == nil ? "open" : "closed",
                epoch: self.epoch,
                firstSeq: state.events.first?.seq,
                lastSeq: state.lastSeq,
                count: state.events.count,
                bytes: state.bytes,
                subscribers: state.subscribers.count
            )
        }
    }

    /// Bytes `evict` would free if an event of `size` bytes were added now.
    private func bytesEvicted(byAdding size: Int, to state: State, now: NIODeadline) -> Int {
        var count = state.events.count + 1
        var bytes = state.bytes + size
        var freed = 0
        for event in state.events {
            guard self.mustEvict(oldest: event, count: count, bytes: bytes, now: now) else { break }
            count -= 1
            bytes -= event.text.readableBytes
            freed += event.text.readableBytes
        }
        return freed
    }

    /// Whether `oldest` goes while the session holds `count` events of `bytes` in all: the one
    /// rule of its history, max_bytes and max_age, for `evict` and for what an append would free.
    private func mustEvict(oldest: SessionEvent, count: Int, bytes: Int, now: NIODeadline) -> Bool {
        count > self.settings.history || bytes > self.settings.maxBytes || now - oldest.time > TimeAmount.interval(self.settings.maxAge)
    }

    private func evict(_ state: inout State, now: NIODeadline) {
        var evictedThrough: UInt64?
        while let first = state.events.first, self.mustEvict(oldest: first, count: state.events.count, bytes: state.bytes, now: now) {
            state.bytes -= first.text.readableBytes
            evictedThrough = state.events.removeFirst().seq
            state.compressed[first.seq] = nil
        }
        if let evictedThrough {
            self.journal?.recordEviction(session: self.id, through: evictedThrough)
        }
    }

    /// `{...}` becomes `{"seq":N,...}`.
    static func stamp(_ object: ByteBuffer, seq: UInt64) -> ByteBuffer {
        var source = object
        while let byte = source.readableBytesView.first, byte != UInt8(ascii: "{") {
            source.moveReaderIndex(forwardBy: 1)
        }
        source.moveReaderIndex(forwardBy: 1)
        let isEmpty = source.readableBytesView.first(where: { ![0x20, 0x0A, 0x0D, 0x09].contains($0) }) == UInt8(ascii: "}")
        var stamped = ByteBuffer()
        stamped.reserveCapacity(source.readableBytes + 24)
        stamped.writeString(#"{"seq":\#(seq)"#)
        if isEmpty {
            stamped.writeString("}")
        } else {
            stamped.writeString(",")
            stamped.writeImmutableBuffer(source)
        }
        return stamped
    }
}

/// What `GET /sessions/{id}` and `session_status(id)` report.
struct SessionStatus: Sendable, Encodable, Equatable {
    var session: String
    var state: String
    var epoch: String
    var firstSeq: UInt64?
    var lastSeq: UInt64
    var count: Int
    var bytes: Int
    var subscribers: Int

    enum CodingKeys: String, CodingKey {
        case session, state, epoch, count, bytes, subscribers
        case firstSeq = "first_seq"
        case lastSeq = "last_seq"
    }

    var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? String(decoding: encoder.encode(self), as: UTF8.self)) ?? "{}"
    }
}
