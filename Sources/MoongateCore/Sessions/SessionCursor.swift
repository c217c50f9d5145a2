import NIOCore
import NIOWebSocket

/// Where one client stands in its session, on the client's I/O loop. Delivery begins once the
/// client has joined (its initial payload is out) and it is known where to resume from: `last_seq`
/// in the URL, a `{"type":"resume"}` first message, or, after `resume_wait`, its `ready` seq.
/// Delivery pulls from the session's history, so a wake-up that arrives late or twice is harmless:
/// no gap, no duplicate, always in order.
struct SessionCursor {
    struct ResumePoint {
        var lastSeq: UInt64
        var epoch: String?
    }

    let session: Session
    /// An endpoint history rather than a session: a client that starts over gets the current
    /// snapshot (its initial payload) and live events, not the whole history.
    let liveOnly: Bool
    /// The client named where to resume (`last_seq` in its URL).
    let requestedResume: Bool
    /// The seq announced in `ready`.
    let readySeq: UInt64
    var delivered: UInt64
    var resumePoint: ResumePoint?
    var delivering = false
    /// A chunk of a long replay is on its way; the next one follows when it has been written.
    var pumping = false

    init(session: Session, readySeq: UInt64, resumePoint: ResumePoint?, liveOnly: Bool = false, requestedResume: Bool = false) {
        self.session = session
        self.liveOnly = liveOnly
        self.requestedResume = requestedResume
        self.readySeq = readySeq
        self.delivered = readySeq
        self.resumePoint = resumePoint
    }

    /// Nothing has said yet where to resume: a `resume` first message may.
    var awaitsResumePoint: Bool { self.resumePoint == nil }
}

extension Connection {
    /// Most bytes of history written before waiting for them to reach the socket: a long replay
    /// is paced by the client's reading, never piled up past the outbound limit.
    static let replayChunkBytes = 128 << 10

    /// For a client of an endpoint history resuming with `last_seq`, decided as it joins: if what
    /// it missed is all still held it needs no initial payload (it gets the missed events instead);
    /// if not, it gets a reset, then the current snapshot, then live events. Must run on its loop.
    func prepareHistoryJoin() -> (reset: ByteBuffer?, skipInitial: Bool) {
        let state = self.onLoop.value
        guard var cursor = state.cursor, cursor.liveOnly, cursor.requestedResume, let point = cursor.resumePoint
        else { return (nil, false) }
        let status = cursor.session.status
        let firstHeld = status.firstSeq ?? (status.lastSeq + 1)
        let sameEpoch = point.epoch.map { $0 == cursor.session.epoch } ?? true
        if sameEpoch, point.lastSeq <= status.lastSeq, point.lastSeq + 1 >= firstHeld {
            return (nil, true)
        }
        cursor.resumePoint = .init(lastSeq: cursor.readySeq, epoch: cursor.session.epoch)
        state.cursor = cursor
        self.slot.metrics.resets.increment()
        return (Self.resetMessage(cursor.session), false)
    }

    /// Joined or resume point decided; begins delivery when both are. Must run on the client's loop.
    func updateSessionCursor(_ update: (inout SessionCursor) -> Void = { _ in }) {
        let state = self.onLoop.value
        guard var cursor = state.cursor else { return }
        update(&cursor)
        var reset: ByteBuffer?
        if !cursor.delivering, state.outbound.machine.isOpen, let point = cursor.resumePoint {
            cursor.delivering = true
            let otherEpoch = point.epoch.map { $0 != cursor.session.epoch } ?? false
            if point.lastSeq > 0 || point.epoch != nil {
                self.slot.metrics.resumes.increment()
            }
            if otherEpoch || point.lastSeq > cursor.session.lastSeq {
                // Another incarnation of the stream (or a seq it never reached): start over from
                // the oldest event held, announced by one reset.
                reset = Self.resetMessage(cursor.session)
                self.slot.metrics.resets.increment()
                cursor.delivered =
                    cursor.liveOnly
                    ? cursor.readySeq : (cursor.session.status.firstSeq ?? (cursor.session.lastSeq + 1)) - 1
            } else {
                cursor.delivered = point.lastSeq
            }
        }
        state.cursor = cursor
        if let reset {
            state.outbound.write(.text(reset))
            state.outbound.flush()
        }
        self.deliverSessionEvents()
    }

    /// Writes the held events the client has not had yet, a chunk at a time. Must run on the
    /// client's loop; safe to call at any moment (it pulls, so extra calls deliver nothing twice).
    func deliverSessionEvents() {
        let state = self.onLoop.value
        guard var cursor = state.cursor, cursor.delivering, !cursor.pumping, state.outbound.machine.mayWrite
        else { return }
        let pending = cursor.session.events(after: cursor.delivered, limit: 1024)
        if pending.gap {
            state.outbound.write(.text(Self.resetMessage(cursor.session)))
            self.slot.metrics.resets.increment()
        }
        guard !pending.events.isEmpty || pending.gap else { return }
        // At most half the outbound limit in flight, so a replay never looks like a slow consumer.
        let highWater = (try? self.channel.syncOptions?.getOption(.writeBufferWaterMark))?.high ?? Self.replayChunkBytes * 2
        let chunkLimit = min(Self.replayChunkBytes, max(1, highWater / 2))
        var chunk = pending.events[...]
        var bytes = 0
        if let end = pending.events.firstIndex(where: { event in
            bytes += event.text.readableBytes
            return bytes >= chunkLimit
        }) {
            chunk = pending.events[...end]
        }
        cursor.delivered = chunk.last?.seq ?? pending.lastSeq
        let more = cursor.delivered < pending.lastSeq
        cursor.pumping = more
        state.cursor = cursor
        self.slot.metrics.sent(messages: chunk.count, bytes: chunk.reduce(0) { $0 + $1.text.readableBytes })
        // With more held, the next chunk follows once this one has been written to the socket.
        let written = more ? self.channel.eventLoop.makePromise(of: Void.self) : nil
        // Plain clients are written each event's text as before: no array of frames for them.
        let compressed = state.outbound.takesCompressedBroadcasts ? cursor.session.compressedFrames(chunk) : nil
        for (offset, event) in chunk.enumerated() {
            let isLast = offset == chunk.count - 1
            state.outbound.write(compressed?[offset] ?? .text(event.text), promise: isLast ? written : nil)
        }
        state.outbound.flush()
        written?.futureResult.whenComplete { _ in
            self.onLoop.value.cursor?.pumping = false
            self.deliverSessionEvents()
        }
    }

    /// A session client's first message: `{"type":"resume","last_seq":N,"epoch":E}` sets where
    /// delivery resumes (and is not routed further); anything else means "everything held".
    /// Returns whether it was a resume message. Must run on the client's loop.
    func resumeFromFirstMessage(_ text: ByteBuffer) -> Bool {
        let point: SessionCursor.ResumePoint? = text.withUnsafeReadableBytes { bytes in
            guard case .object(let envelope) = JSONEnvelope.scan(bytes), envelope.type == .string("resume") else {
                return nil
            }
            let lastSeq = envelope.lastSeq.flatMap { UInt64(String(decoding: bytes[$0], as: UTF8.self)) } ?? 0
            let epoch = envelope.epoch.map { String(decoding: bytes[$0], as: UTF8.self).trimmingQuotes }
            return SessionCursor.ResumePoint(lastSeq: lastSeq, epoch: epoch)
        }
        self.updateSessionCursor { cursor in
            cursor.resumePoint = point ?? .init(lastSeq: 0, epoch: nil)
        }
        return point != nil
    }

    static func readyMessage(_ session: Session, seq: UInt64) -> ByteBuffer {
        let state = session.isClosed ? "closed" : "open"
        return ByteBuffer(
            string: #"{"type":"ready","session":\#(jsonString(session.id)),"epoch":"\#(session.epoch)","seq":\#(seq),"state":"\#(state)"}"#
        )
    }

    static func resetMessage(_ session: Session) -> ByteBuffer {
        let status = session.status
        let first = status.firstSeq.map(String.init) ?? "null"
        return ByteBuffer(
            string: #"{"type":"reset","session":\#(jsonString(session.id)),"epoch":"\#(session.epoch)","seq":\#(status.lastSeq),"first_seq":\#(first)}"#
        )
    }
}
