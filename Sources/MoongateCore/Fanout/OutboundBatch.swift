import NIOCore
import NIOWebSocket

/// Frames a script produced during one task on its loop, delivered when the task ends with one hop
/// per I/O event loop and one flush per touched connection. Per loop, operations keep their order,
/// so a client sees a `conn:send` before a later broadcast or close from the same callback.
struct OutboundBatch {
    enum Operation: Sendable {
        case send(Connection, WebSocketFrame)
        /// Writes the initial message (if any), then the broadcasts that arrived while it was being
        /// computed, and from then on the client gets broadcasts as they come.
        case join(Connection, initial: WebSocketFrame?)
        /// `frame` holds a complete serialised frame, written as it is to every member.
        case broadcast(Fanout, frame: ByteBuffer, pathFilter: String?)
        case close(Connection, WebSocketErrorCode, reason: String)
        /// The script finished a batch of this client's events (see `ConnectionLoopState.scriptWork`).
        case completed(Connection)
    }

    static let flushThreshold = 64 << 10

    private var operations: [ObjectIdentifier: (loop: any EventLoop, operations: [Operation])] = [:]
    private let ioLoops: [any EventLoop]
    private let serializer = FrameSerializer()

    init(ioLoops: [any EventLoop]) {
        self.ioLoops = ioLoops
    }

    /// Frames `frame` once; every member of each target's fan-out (on its path filter, if any)
    /// gets those same bytes. An endpoint that keeps a history records a JSON object there instead
    /// (stamped with its seq), and its clients receive it through their history cursors.
    func serialize(_ frame: WebSocketFrame) -> ByteBuffer {
        self.serializer.serialize(frame)
    }

    mutating func appendBroadcast(_ frame: WebSocketFrame, to targets: [(slot: EndpointSlot, pathFilter: String?)]) {
        var serialized: ByteBuffer?
        for target in targets {
            target.slot.metrics.broadcasts.increment()
            if target.pathFilter == nil, let history = target.slot.history,
                case .success = SessionStore.eventType(of: frame.data)
            {
                if case .success(let appended) = history.append(object: frame.data, type: nil) {
                    appended.wakeSubscribers()
                }
                continue
            }
            if serialized == nil {
                serialized = self.serializer.serialize(frame)
            }
            self.append(.broadcast(target.slot.fanout, frame: serialized!, pathFilter: target.pathFilter))
        }
    }

    var isEmpty: Bool { self.operations.isEmpty }

    mutating func append(_ operation: Operation) {
        switch operation {
        case .send(let connection, _), .join(let connection, _), .close(let connection, _, _), .completed(let connection):
            self.append(operation, on: connection.channel.eventLoop)
        case .broadcast:
            for loop in self.ioLoops {
                self.append(operation, on: loop)
            }
        }
    }

    private mutating func append(_ operation: Operation, on loop: any EventLoop) {
        self.operations[ObjectIdentifier(loop), default: (loop, [])].operations.append(operation)
    }

    mutating func flush() {
        guard !self.operations.isEmpty else { return }
        let batches = self.operations.values
        self.operations = [:]
        for (loop, operations) in batches {
            loop.execute {
                Self.perform(operations, on: loop)
            }
        }
    }

    /// Most broadcasts a joining client may have waiting; a script that takes this long to compute
    /// an initial payload is not keeping up, and the client is better off reconnecting.
    static let earlyBroadcastLimit = 4096

    private static func holdUntilJoined(_ frame: ByteBuffer, for connection: Connection) {
        let held = connection.onLoop.withValue { state -> Bool in
            guard state.earlyBroadcasts != nil, state.earlyBroadcasts!.count < Self.earlyBroadcastLimit else { return false }
            state.earlyBroadcasts!.append(frame)
            return true
        }
        if !held, connection.onLoop.value.earlyBroadcasts != nil {
            connection.slot.fanout.remove(connection)
            connection.close(code: .unknown(1013), reason: "the endpoint is not keeping up: try again later")
        }
    }

    /// Carries out `operations` now; must run on `loop`.
    static func perform(_ operations: [Operation], on loop: any EventLoop) {
        // Every connection written to, flushed once when the batch is done. A long burst is flushed
        // as it goes, so a client that reads at full speed never sees more than `flushThreshold`
        // queued in the host and is not mistaken for a slow consumer.
        var touched: [Connection] = []
        func wrote(_ bytes: Int, to connection: Connection) {
            let flushNow = connection.onLoop.withValue { state -> Bool in
                if state.unflushedBytes == 0 {
                    touched.append(connection)
                }
                state.unflushedBytes += max(bytes, 1)
                return state.unflushedBytes >= Self.flushThreshold
            }
            if flushNow {
                connection.flush()
            }
        }
        func write(_ frame: WebSocketFrame, to connection: Connection) {
            guard !connection.onLoop.value.isClosing else { return }
            connection.channel.write(frame, promise: nil)
            wrote(frame.length, to: connection)
            connection.slot.metrics.sent(bytes: frame.length)
        }
        func write(serialized frame: ByteBuffer, to connection: Connection) {
            guard let writer = connection.onLoop.value.openWriter else { return }
            writer.write(NIOAny(frame), promise: nil)
            wrote(frame.readableBytes, to: connection)
        }
        // Past this index nothing writes (only `.completed` bookkeeping follows).
        let lastWrite = operations.lastIndex { operation in
            if case .completed = operation { return false }
            return true
        }
        for (index, operation) in operations.enumerated() {
            switch operation {
            case .send(let connection, let frame):
                write(frame, to: connection)
            case .join(let connection, let initial):
                connection.onLoop.value.scriptWork -= 1
                guard connection.channel.isActive else { continue }
                let history = connection.prepareHistoryJoin()
                if let reset = history.reset {
                    write(.text(reset), to: connection)
                }
                if let initial, !history.skipInitial {
                    write(initial, to: connection)
                }
                for frame in connection.onLoop.value.earlyBroadcasts ?? [] {
                    write(serialized: frame, to: connection)
                }
                connection.onLoop.value.earlyBroadcasts = nil
                if let writer = connection.onLoop.value.openWriter {
                    connection.slot.fanout.markReady(connection, writer: writer)
                }
                connection.updateSessionCursor { $0.joined = true }
            case .broadcast(let fanout, let frame, let pathFilter):
                let deliveries: Int
                if index == lastWrite, pathFilter == nil {
                    // Nothing after this in the batch can join these writes: out they go now,
                    // without visiting each recipient's state. A recipient this batch already
                    // wrote to gets that flushed too, and its later flush finds nothing to do.
                    deliveries = fanout.writeAndFlush(frame, on: loop) { Self.holdUntilJoined(frame, for: $0) }
                } else {
                    var count = 0
                    fanout.forEachMember(
                        on: loop,
                        ready: { connection, writer in
                            guard pathFilter == nil || connection.path == pathFilter else { return }
                            writer.write(NIOAny(frame), promise: nil)
                            wrote(frame.readableBytes, to: connection)
                            count += 1
                        },
                        joining: { connection in
                            guard pathFilter == nil || connection.path == pathFilter else { return }
                            Self.holdUntilJoined(frame, for: connection)
                            count += 1
                        }
                    )
                    deliveries = count
                }
                if deliveries > 0 {
                    fanout.metrics.deliveries.increment(by: deliveries)
                    fanout.metrics.sent(messages: deliveries, bytes: deliveries * frame.readableBytes)
                }
            case .close(let connection, let code, let reason):
                if connection.onLoop.value.unflushedBytes > 0 {
                    connection.flush()
                }
                connection.close(code: code, reason: reason)
            case .completed(let connection):
                connection.onLoop.value.scriptWork -= 1
            }
        }
        for connection in touched where connection.onLoop.value.unflushedBytes > 0 {
            connection.flush()
        }
    }
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
