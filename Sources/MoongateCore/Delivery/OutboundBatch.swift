import NIOCore
import NIOWebSocket
import WebSocketDeflate

/// Frames a script produced during one task on its loop, delivered when the task ends with one hop
/// per I/O event loop and one flush per touched connection. Per loop, operations keep their order,
/// so a client sees a `conn:send` before a later broadcast or close from the same callback.
struct OutboundBatch {
    enum Operation: Sendable {
        case send(Connection, WebSocketFrame)
        /// Writes the initial message (if any), then the broadcasts that arrived while it was being
        /// computed, and from then on the client gets broadcasts as they come.
        case join(Connection, initial: WebSocketFrame?)
        /// `frame` holds a complete serialised frame, written as it is to every member; members
        /// that negotiated permessage-deflate get `frame.compressed` when there is one.
        case broadcast(Fanout, frame: SerializedBroadcast, pathFilter: String?)
        case close(Connection, WebSocketErrorCode, reason: String)
        /// The script finished a batch of this client's events (see `ConnectionStateMachine.scriptWork`).
        case completed(Connection)
    }

    private var operations: [ObjectIdentifier: (loop: any EventLoop, operations: [Operation])] = [:]
    private let ioLoops: [any EventLoop]
    /// Bytes of sends queued for each client since the last flush; nil once the client was cut
    /// for passing its outbound limit with them.
    private var queuedBytes: [ObjectIdentifier: Int?] = [:]
    /// Bytes of every frame queued since the last flush.
    private var heldBytes = 0
    /// A batch holding more than this goes to the I/O loops before the callback ends, where each
    /// client's outbound limit applies, rather than piling up on the script's loop.
    static let flushThreshold = 4 << 20

    init(ioLoops: [any EventLoop]) {
        self.ioLoops = ioLoops
    }

    /// Frames `frame` once; every member of each target's fan-out (on its path filter, if any)
    /// gets those same bytes. An endpoint that keeps a history records a JSON object there instead
    /// (stamped with its seq), and its clients receive it through their history cursors.
    func serialize(_ frame: WebSocketFrame, for fanouts: [Fanout]) -> SerializedBroadcast {
        var serialized = SerializedBroadcast(plain: ServerFrame.encode(frame.opcode, payload: frame.data), compressed: nil)
        if fanouts.contains(where: \.wantsCompressedFrames) {
            serialized.compressed = self.compressed(frame)
        }
        return serialized
    }

    /// The message compressed once for every recipient that negotiated permessage-deflate, as a
    /// serialised frame with RSV1 set.
    private func compressed(_ frame: WebSocketFrame) -> ByteBuffer? {
        guard let payload = MessageDeflate.compress(frame.data, windowBits: 15) else {
            return nil
        }
        return ServerFrame.encode(frame.opcode, payload: payload, rsv1: true)
    }

    /// Where the broadcasts that go into an endpoint's history are recorded: `sessions`, or
    /// nowhere for one relayed from another host of a cluster (that host recorded it in the log).
    enum HistoryRecording {
        case record(SessionStore)
        case alreadyRecorded
    }

    /// Returns whether any target got the frame through its fan-out (not only into a history).
    @discardableResult
    mutating func appendBroadcast(
        _ frame: WebSocketFrame,
        to targets: [(slot: EndpointSlot, pathFilter: String?)],
        histories: HistoryRecording
    ) -> Bool {
        var serialized: SerializedBroadcast?
        for target in targets {
            target.slot.metrics.broadcasts.increment()
            if target.pathFilter == nil, let history = target.slot.history,
                case .success = SessionStore.eventType(of: frame.data)
            {
                if case .record(let sessions) = histories {
                    sessions.record(frame.data, inHistory: history)
                }
                continue
            }
            if serialized == nil {
                serialized = self.serialize(frame, for: targets.map(\.slot.fanout))
            }
            self.append(.broadcast(target.slot.fanout, frame: serialized!, pathFilter: target.pathFilter))
        }
        return serialized != nil
    }

    var isEmpty: Bool { self.operations.isEmpty }

    /// Queues a script's send unless it would pass the client's outbound limit together with the
    /// sends this batch already holds for it: then the client is closed as too slow (1008), as it
    /// would be had those bytes reached its socket, and this and its later sends are dropped.
    /// Returns whether the frame was queued.
    mutating func appendSend(_ frame: WebSocketFrame, to connection: Connection) -> Bool {
        let key = ObjectIdentifier(connection)
        guard let queued = self.queuedBytes[key, default: 0] else { return false }
        guard queued + frame.length <= connection.outboundLimit else {
            self.queuedBytes[key] = .some(nil)
            connection.slot.metrics.slowConsumers.increment()
            self.append(.close(connection, .policyViolation, reason: "too much queued for this client"))
            return false
        }
        self.queuedBytes[key] = queued + frame.length
        self.append(.send(connection, frame))
        return true
    }

    mutating func append(_ operation: Operation) {
        switch operation {
        case .send(let connection, let frame):
            self.heldBytes += frame.length
            self.append(operation, on: connection.channel.eventLoop)
        case .join(let connection, _), .close(let connection, _, _), .completed(let connection):
            self.append(operation, on: connection.channel.eventLoop)
        case .broadcast(_, let frame, _):
            self.heldBytes += frame.plain.readableBytes + (frame.compressed?.readableBytes ?? 0)
            for loop in self.ioLoops {
                self.append(operation, on: loop)
            }
        }
        if self.heldBytes > Self.flushThreshold {
            self.flush(endOfTask: false)
        }
    }

    private mutating func append(_ operation: Operation, on loop: any EventLoop) {
        self.operations[ObjectIdentifier(loop), default: (loop, [])].operations.append(operation)
    }

    /// Hands the operations to the I/O loops. `endOfTask`: the script's task is over, so the
    /// clients cut for their queued sends are forgotten too (within a task they stay cut, and
    /// `appendSend` keeps refusing them).
    mutating func flush(endOfTask: Bool = true) {
        self.queuedBytes = endOfTask ? [:] : self.queuedBytes.filter { $0.value == nil }
        self.heldBytes = 0
        guard !self.operations.isEmpty else { return }
        let batches = self.operations.values
        self.operations = [:]
        for (loop, operations) in batches {
            loop.execute {
                Self.perform(operations, on: loop)
            }
        }
    }

    /// Carries out `operations` now; must run on `loop`. Every write goes through the target's
    /// `OutboundGate`; each gate written to is flushed once when the batch is done (a long burst
    /// is flushed as it goes, see `OutboundGate.flushThreshold`).
    static func perform(_ operations: [Operation], on loop: any EventLoop) {
        var pending = PendingFlushes()
        func write(_ frame: WebSocketFrame, to connection: Connection, through outbound: OutboundGate) {
            pending.willWrite(to: outbound)
            if outbound.write(frame) {
                connection.slot.metrics.sent(bytes: frame.length)
            }
        }
        // Past this index nothing writes (only `.completed` bookkeeping follows).
        let lastWrite = operations.lastIndex { operation in
            if case .completed = operation { return false }
            return true
        }
        for (index, operation) in operations.enumerated() {
            switch operation {
            case .send(let connection, let frame):
                write(frame, to: connection, through: connection.onLoop.value.outbound)
            case .join(let connection, let initial):
                let outbound = connection.onLoop.value.outbound
                var first: [WebSocketFrame] = []
                if outbound.machine.isJoining {
                    let history = connection.prepareHistoryJoin()
                    if let reset = history.reset {
                        first.append(.text(reset))
                    }
                    if let initial, !history.skipInitial {
                        first.append(initial)
                    }
                }
                pending.willWrite(to: outbound)
                if outbound.join(first: first) {
                    connection.slot.metrics.sent(bytes: first.reduce(0) { $0 + $1.length })
                    connection.updateSessionCursor()
                }
            case .broadcast(let fanout, let frame, let pathFilter):
                // When nothing after this in the batch writes, each recipient is flushed as it is
                // written: its later flush would find nothing else to send.
                let deliveries = fanout.deliver(
                    frame.plain,
                    compressed: frame.compressed,
                    on: loop,
                    pathFilter: pathFilter,
                    flushEach: index == lastWrite,
                    pending: &pending
                )
                if deliveries > 0 {
                    fanout.metrics.deliveries.increment(by: deliveries)
                    fanout.metrics.sent(messages: deliveries, bytes: deliveries * frame.plain.readableBytes)
                }
            case .close(let connection, let code, let reason):
                connection.onLoop.value.outbound.close(CloseFrame(code: code, reason: reason))
            case .completed(let connection):
                connection.onLoop.value.outbound.scriptFinished()
            }
        }
        pending.flush()
    }
}

/// A broadcast framed once: as it is, and compressed for the recipients that take that.
struct SerializedBroadcast: Sendable {
    var plain: ByteBuffer
    var compressed: ByteBuffer?
}

extension WebSocketFrame {
    static func text(_ text: String) -> WebSocketFrame {
        WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: text))
    }

    static func text(_ buffer: ByteBuffer) -> WebSocketFrame {
        WebSocketFrame(fin: true, opcode: .text, data: buffer)
    }

    static func binary(_ bytes: ByteBuffer) -> WebSocketFrame {
        WebSocketFrame(fin: true, opcode: .binary, data: bytes)
    }
}
