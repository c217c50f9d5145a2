import NIOCore
import NIOWebSocket
import WebSocketDeflate

/// A connection's one way out, on its I/O loop. Every frame the host sends a client passes here
/// (replies, `conn:send`, broadcasts, session and history deliveries, pings and pongs, the
/// console feed, close frames), so "nothing after a close frame", flush accounting and the
/// closing handshake are enforced in one place. It owns the connection's state machine and
/// carries out its close actions.
final class OutboundGate {
    /// How long a peer may take to answer our close frame.
    static let closeTimeout: TimeAmount = .seconds(2)
    /// Bytes written without a flush before one is forced: a client that reads at full speed
    /// never sees more than this queued in the host, so it is not mistaken for a slow consumer.
    static let flushThreshold = 64 << 10
    /// Payloads up to this size are copied behind their frame header into one buffer; larger
    /// ones are written after it as they are.
    static let copyLimit = 16 << 10

    private(set) var machine: ConnectionStateMachine
    private let channel: any Channel
    /// Where frames are written: the connection handler's context, so they pass only the encoder.
    private var frames: ChannelHandlerContext?
    /// The frame encoder's context: complete serialised frames written here go straight to the
    /// socket side, without being framed again. Nil where there is none (or once the client has gone).
    private var encoded: ChannelHandlerContext?
    /// Bytes written and not flushed yet.
    private(set) var unflushedBytes = 0
    /// Small frames sent since the last write down the pipeline, back to back: the replies to one
    /// socket read (eight acks at window 8) go down as one buffer, one write instead of eight.
    /// Every other write, and every flush, sends these first, so the order is kept.
    private var heldFrames: ByteBuffer?
    /// Writes under way: NIO reports the outbound limit from inside a write, and the close that
    /// follows waits for the outermost write to finish, so no frame goes out after the close frame.
    private var writeDepth = 0
    private var deferredClose: ConnectionStateMachine.CloseAction?
    private var closeTimeoutTask: Scheduled<Void>?
    /// permessage-deflate: every data message goes compressed. The RFC would allow small ones
    /// plain, but clients that negotiated it (Autobahn's suite among them) expect them compressed.
    private let deflate: DeflateParameters?
    /// Whether a broadcast's shared compressed frame (made with the largest window) suits this client.
    let takesCompressedBroadcasts: Bool

    init(channel: any Channel, joining: Bool = true, deflate: DeflateParameters? = nil) {
        self.channel = channel
        self.machine = ConnectionStateMachine(joining: joining)
        self.deflate = deflate
        self.takesCompressedBroadcasts = deflate?.serverMaxWindowBits == 15
    }

    /// Where to write from now on: `frames` for frames, `encoded` for serialised frames.
    func attach(frames: ChannelHandlerContext?, encoded: ChannelHandlerContext? = nil) {
        if let frames { self.frames = frames }
        if let encoded { self.encoded = encoded }
    }

    // MARK: Writing

    /// Writes a frame unless a close frame has gone out; `promise` fails if it is dropped. A frame
    /// with RSV1 set is already compressed (a session event compressed once for all its readers).
    @discardableResult
    func write(_ frame: WebSocketFrame, promise: EventLoopPromise<Void>? = nil) -> Bool {
        assert(frame.fin && !frame.rsv2 && !frame.rsv3, "the host sends whole messages without extensions but permessage-deflate")
        return self.send(frame.opcode, payload: frame.data, compressed: frame.rsv1, promise: promise)
    }

    /// Writes one unfragmented message (or control frame) unless a close frame has gone out, as
    /// one buffer holding the whole frame below the frame encoder (a payload larger than
    /// `copyLimit` without room for its header goes as a second buffer after it, not copied).
    /// Data messages are compressed first for a client that negotiated permessage-deflate.
    @discardableResult
    func send(_ opcode: WebSocketOpcode, payload: ByteBuffer, compressed: Bool = false, promise: EventLoopPromise<Void>? = nil) -> Bool {
        guard self.machine.mayWrite else {
            promise?.fail(ChannelError.outputClosed)
            return false
        }
        self.beginWrite()
        defer { self.endWrite() }
        var payload = payload
        var rsv1 = compressed
        if !compressed, let deflate = self.deflate, opcode == .text || opcode == .binary,
            let deflated = MessageDeflate.compress(payload, windowBits: deflate.serverMaxWindowBits)
        {
            payload = deflated
            rsv1 = true
        }
        let length = payload.readableBytes
        guard let encoded = self.encoded else {
            self.writeFrame(WebSocketFrame(fin: true, rsv1: rsv1, opcode: opcode, data: payload), promise: promise)
            self.wrote(length)
            return true
        }
        if length <= Self.copyLimit, promise == nil {
            let frame = ServerFrame.encode(opcode, payload: payload, rsv1: rsv1, allocator: self.channel.allocator)
            if self.heldFrames.map({ $0.readableBytes + frame.readableBytes > Self.copyLimit }) == true {
                self.writeHeldFrames()
            }
            if var held = self.heldFrames.take() {
                if held.writableBytes < frame.readableBytes {
                    // Room for a few more like these at once, not a reallocation per frame.
                    var grown = self.channel.allocator.buffer(capacity: max(1024, 2 * (held.readableBytes + frame.readableBytes)))
                    grown.writeImmutableBuffer(held)
                    held = grown
                }
                held.writeImmutableBuffer(frame)
                self.heldFrames = held
            } else {
                self.heldFrames = frame
            }
        } else {
            self.writeHeldFrames()
            if length > Self.copyLimit, payload.readerIndex < ServerFrame.headerLength(payloadLength: length) {
                encoded.write(NIOAny(ServerFrame.header(opcode, rsv1: rsv1, payloadLength: length, allocator: self.channel.allocator)), promise: nil)
                encoded.write(NIOAny(payload), promise: promise)
            } else {
                encoded.write(NIOAny(ServerFrame.encode(opcode, payload: payload, rsv1: rsv1, allocator: self.channel.allocator)), promise: promise)
            }
        }
        self.wrote(length)
        return true
    }

    private func beginWrite() {
        self.writeDepth += 1
    }

    private func endWrite() {
        self.writeDepth -= 1
        if self.writeDepth == 0, let close = self.deferredClose.take() {
            self.carryOut(close)
        }
    }

    private func writeHeldFrames() {
        guard let held = self.heldFrames.take(), let encoded = self.encoded else { return }
        encoded.write(NIOAny(held), promise: nil)
    }

    /// Writes a complete serialised frame (a broadcast's shared bytes) unless a close frame has gone out.
    @discardableResult
    func write(serialized frame: ByteBuffer) -> Bool {
        guard self.machine.mayWrite, let encoded = self.encoded else { return false }
        self.beginWrite()
        defer { self.endWrite() }
        self.writeHeldFrames()
        encoded.write(NIOAny(frame), promise: nil)
        self.wrote(frame.readableBytes)
        return true
    }

    /// A broadcast: written now when open, held while joining, dropped once closing. Returns
    /// whether the client gets it. `compressed` is the same message compressed once for every
    /// client that negotiated permessage-deflate.
    func deliver(broadcast plain: ByteBuffer, compressed: ByteBuffer?, flushNow: Bool) -> Bool {
        let frame = self.takesCompressedBroadcasts ? compressed ?? plain : plain
        // The common case, an open client, without a mutating call into the machine.
        let action: ConnectionStateMachine.BroadcastAction = self.machine.isOpen ? .write : self.machine.broadcastArrived(frame)
        switch action {
        case .write where flushNow:
            guard let encoded = self.encoded else { return false }
            self.beginWrite()
            defer { self.endWrite() }
            self.writeHeldFrames()
            // One trip down the pipeline instead of two: the common case of a broadcast.
            self.unflushedBytes = 0
            encoded.writeAndFlush(NIOAny(frame), promise: nil)
            return true
        case .write:
            return self.write(serialized: frame)
        case .held:
            return true
        case .drop:
            return false
        case .close(let action):
            self.carryOut(action)
            return false
        }
    }

    /// The script finished the connect: `first` (a reset, the initial payload) goes out, then
    /// the broadcasts held meanwhile, and from then on broadcasts are written as they come.
    /// Returns false if the client was no longer joining (nothing written).
    @discardableResult
    func join(first: [WebSocketFrame]) -> Bool {
        let wasJoining = self.machine.isJoining
        // Written while still joining, so they come before anything the fan-out sends next.
        if wasJoining {
            first.forEach { self.write($0) }
        }
        guard let held = self.machine.joined() else { return false }
        held.forEach { self.write(serialized: $0) }
        return true
    }

    func flush() {
        self.unflushedBytes = 0
        self.writeHeldFrames()
        if let encoded = self.encoded {
            encoded.flush()
        } else if let frames = self.frames {
            frames.flush()
        } else {
            self.channel.flush()
        }
    }

    func flushIfNeeded() {
        if self.unflushedBytes > 0 { self.flush() }
    }

    private func wrote(_ bytes: Int) {
        self.unflushedBytes += max(bytes, 1)
        if self.unflushedBytes >= Self.flushThreshold {
            self.flush()
        }
    }

    private func writeFrame(_ frame: WebSocketFrame, promise: EventLoopPromise<Void>?) {
        self.writeHeldFrames()
        if let frames = self.frames {
            frames.write(NIOAny(frame), promise: promise)
        } else {
            self.channel.write(frame, promise: promise)
        }
    }

    // MARK: The script's work

    func scriptStarted() { self.machine.scriptStarted() }
    func scriptFinished() { self.machine.scriptFinished() }

    // MARK: Closing and keep-alive (the state machine's events, carried out)

    /// The host closes: whatever is queued goes first, then the close frame; the peer's answer
    /// is awaited for at most `closeTimeout`.
    func close(_ frame: CloseFrame) {
        self.carryOut(self.machine.closeRequested(frame))
    }

    /// A protocol violation: close frame, then the socket.
    func fail(_ frame: CloseFrame) {
        self.carryOut(self.machine.failed(frame))
    }

    func peerClosed(payload: ByteBuffer) {
        self.carryOut(self.machine.peerClosed(payload: payload))
    }

    /// Returns whether this started the close (false when a close was already under way).
    func outboundLimitExceeded() -> Bool {
        let action = self.machine.outboundLimitExceeded()
        if self.writeDepth > 0 {
            self.deferredClose = action
        } else {
            self.carryOut(action)
        }
        return action != .none
    }

    func pongReceived() { self.machine.pongReceived() }

    func startKeepAlive(now: NIODeadline, pingEvery: Double?) -> NIODeadline {
        self.machine.startKeepAlive(now: now, pingEvery: pingEvery)
    }

    /// Sends a due ping, or drops a peer that missed one; returns when to come back (nil: never).
    func keepAliveDue(now: NIODeadline, pingEvery: Double?, pingTimeout: Double) -> (next: NIODeadline?, missedPong: Bool) {
        switch self.machine.keepAliveDue(now: now, pingEvery: pingEvery, pingTimeout: pingTimeout) {
        case .wait(let ping, let next):
            if let ping {
                self.write(WebSocketFrame(fin: true, opcode: .ping, data: ping))
                self.flush()
            }
            return (next, false)
        case .closeSocket:
            self.carryOut(.closeSocket)
            return (nil, true)
        case .stop:
            return (nil, false)
        }
    }

    /// The socket is gone: nothing is written any more. Returns the close code to report.
    func socketClosed() -> WebSocketErrorCode? {
        self.closeTimeoutTask?.cancel()
        self.closeTimeoutTask = nil
        self.frames = nil
        self.encoded = nil
        self.heldFrames = nil
        return self.machine.socketClosed()
    }

    private func carryOut(_ action: ConnectionStateMachine.CloseAction) {
        switch action {
        case .none:
            return
        case .closeSocket:
            self.channel.close(promise: nil)
        case .send(let close, let then):
            let frame = close.frame(allocator: self.channel.allocator)
            switch then {
            case .closeSocket:
                let channel = self.channel
                let written = self.channel.eventLoop.makePromise(of: Void.self)
                written.futureResult.whenComplete { _ in channel.close(promise: nil) }
                self.writeFrame(frame, promise: written)
                self.flush()
            case .awaitPeer:
                self.writeFrame(frame, promise: nil)
                self.flush()
                let loopBoundSelf = NIOLoopBound(self, eventLoop: self.channel.eventLoop)
                self.closeTimeoutTask = self.channel.eventLoop.assumeIsolated().scheduleTask(in: Self.closeTimeout) {
                    loopBoundSelf.value.carryOut(loopBoundSelf.value.machine.closeTimedOut())
                }
            }
        }
    }
}

@available(*, unavailable)
extension OutboundGate: Sendable {}
