import Logging
import NIOCore
import NIOWebSocket

/// The inbound side of one WebSocket connection, on its I/O loop: it turns what the socket
/// delivers into the connection state machine's events (carried out by the connection's
/// `OutboundGate`), validates UTF-8, and hands complete messages to the endpoint's script in one
/// batch per socket read.
final class WebSocketConnectionHandler: ChannelInboundHandler, UnfragmentedMessageSink {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    let connection: Connection
    private let registry: ConnectionRegistry
    let maxMessageSize: Int
    private var rateLimit: MessageRateLimit?
    /// The host's logger; the connection's metadata is added per line, only when one is logged.
    let logger: Logger
    /// The connection's loop state, held here so the hot path does not look it up per frame.
    let state: ConnectionLoopState
    let outbound: OutboundGate
    private var pending: [InboundMessage] = []
    /// The endpoint's binding as read once for the current socket read: its routing decides the
    /// batch's messages and its runtime gets them.
    private var readBinding: EndpointBinding?
    private var needsFlush = false
    /// This read's counts, added to the endpoint's metrics when it is over.
    private var tally = ReadTally()
    /// When this read's first message was rate-limited: one clock reading serves the whole read.
    private var readTime: NIODeadline?
    let keepAliveWheels: KeepAliveWheels
    var keepAliveWheel: KeepAliveWheel?
    var keepAliveSlot: Int?

    /// Must be created on the connection's loop.
    init(
        connection: Connection,
        registry: ConnectionRegistry,
        keepAlive: KeepAliveWheels,
        maxMessageSize: Int,
        maxMessageRate: Double,
        logger: Logger
    ) {
        self.connection = connection
        self.state = connection.onLoop.value
        self.outbound = self.state.outbound
        self.registry = registry
        self.keepAliveWheels = keepAlive
        self.maxMessageSize = maxMessageSize
        self.rateLimit = maxMessageRate > 0 ? MessageRateLimit(perSecond: maxMessageRate) : nil
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.outbound.attach(frames: context)
        self.registry.add(self.connection)
        self.connection.slot.metrics.connectionOpened()
        guard let binding = self.connection.slot.binding else {
            self.outbound.close(CloseFrame(code: .goingAway, reason: "endpoint removed"))
            return
        }
        self.logger.debug("client connected", metadata: self.metadata(["path": "\(self.connection.path)"]))
        self.startKeepAlive(context: context)
        // In the fan-out from the first moment, so no broadcast is missed; those that come before
        // the initial payload wait for it (the state machine holds them while joining).
        self.connection.slot.fanout.add(self.connection)
        if let follows = self.connection.follows {
            self.attach(to: follows, context: context)
        }
        self.outbound.scriptStarted()
        if binding.spec.fixedOpen {
            // Nothing for the script to compute: join here, without a trip to its executor.
            let initial = binding.spec.initialText.map(WebSocketFrame.text)
            OutboundBatch.perform([.join(self.connection, initial: initial)], on: context.eventLoop)
        } else {
            binding.runtime.connect(self.connection)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.addTally()
        let code = self.outbound.socketClosed()
        self.stopKeepAlive()
        self.connection.slot.fanout.remove(self.connection)
        self.connection.follows?.log.unsubscribe(self.connection)
        // Queue on_close before leaving the registry: shutdown waits for the registry to empty
        // and then retires the scripts, which runs what was queued first.
        self.connection.slot.binding?.runtime.disconnect(self.connection, code: code)
        self.registry.remove(self.connection)
        let wireCode = code.map { UInt16(webSocketErrorCode: $0) }
        self.connection.slot.metrics.connectionClosed(code: wireCode)
        self.logger.debug("client disconnected", metadata: self.metadata(["code": "\(wireCode ?? 1006)"]))
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.stopKeepAlive()
    }

    func metadata(_ extra: Logger.Metadata = [:]) -> Logger.Metadata {
        extra.merging(["endpoint": "\(self.connection.slot.pattern)", "connection": "\(self.connection.id)"]) { own, _ in own }
    }

    // MARK: Reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = self.unwrapInboundIn(data)
        switch frame.opcode {
        case .text, .binary:
            _ = self.receivedMessage(frame.opcode, payload: frame.unmaskedData)
        case .ping:
            guard self.outbound.machine.mayWrite else { return }
            self.outbound.send(.pong, payload: frame.unmaskedData)
            self.needsFlush = true
        case .pong:
            self.outbound.pongReceived()
        case .connectionClose:
            let wasOpen = self.outbound.machine.mayWrite
            self.outbound.peerClosed(payload: frame.unmaskedData)
            if wasOpen {
                let code = self.outbound.machine.closeCode.map { UInt16(webSocketErrorCode: $0) } ?? 1005
                self.logger.debug("client closed the connection", metadata: self.metadata(["code": "\(code)"]))
            }
        default:
            // Continuations are joined by the aggregator and reserved opcodes stopped by the validator.
            guard self.outbound.machine.mayWrite else { return }
            self.fail(.unexpectedFrame)
        }
    }

    /// The socket read is done (`WebSocketFrameReader` says so directly; the event does not pass
    /// down the pipeline): its messages for the script go as one batch, its replies are flushed once.
    func readComplete() {
        self.addTally()
        self.readTime = nil
        if !self.pending.isEmpty {
            let messages = self.pending
            self.pending = []
            if let runtime = (self.readBinding ?? self.connection.slot.binding)?.runtime {
                self.outbound.scriptStarted()
                runtime.deliver(messages, from: self.connection)
            }
        }
        self.readBinding = nil
        if self.needsFlush {
            self.needsFlush = false
            self.outbound.flush()
        }
    }

    private func readTimeNow() -> NIODeadline {
        if let readTime = self.readTime { return readTime }
        let now = NIODeadline.now()
        self.readTime = now
        return now
    }

    private func addTally() {
        guard !self.tally.isEmpty else { return }
        self.connection.slot.metrics.add(self.tally)
        self.tally = ReadTally()
    }

    // MARK: Messages

    /// A complete text or binary message, unmasked: from `WebSocketFrameReader` directly, or as a
    /// frame that went through the validator (and the aggregator). Returns whether it was kept.
    func receivedMessage(_ opcode: WebSocketOpcode, payload: ByteBuffer) -> Bool {
        guard self.outbound.machine.mayWrite else {
            return false  // closing: data from the peer is no longer wanted
        }
        if payload.readableBytes > self.maxMessageSize {
            self.refuse(.messageTooLarge(limit: self.maxMessageSize))
            return false
        }
        self.tally.received(bytes: payload.readableBytes)
        if self.rateLimit != nil, self.rateLimit!.admit(now: self.readTimeNow()) == false {
            self.refuse(.rateLimited)
            return false
        }
        guard opcode == .text else {
            self.pending.append(.binary(payload))
            return true
        }
        guard payload.isValidUTF8 else {
            self.fail(.invalidUTF8)
            return false
        }
        if self.connection.follows != nil, self.state.cursor?.awaitsResumePoint == true,
            self.connection.resumeFromFirstMessage(payload)
        {
            return false
        }
        if self.readBinding == nil {
            self.readBinding = self.connection.slot.binding
        }
        guard let routing = self.readBinding?.routing else { return false }
        switch routing.decide(payload) {
        case .reply(let reply, _) where self.pending.isEmpty && self.outbound.machine.mayAnswerDirectly:
            self.tally.replied(reply)
            self.outbound.send(.text, payload: reply)
            self.needsFlush = true
            return false
        case .reply(_, let id), .script(let id):
            self.pending.append(.text(payload, id: id))
            return true
        }
    }

    // MARK: Closing

    /// Closes because of what the peer sent (too large, too fast) while the protocol is still
    /// intact: the closing handshake runs, so the peer reads our close frame instead of
    /// losing it to a reset when it keeps sending into a closed socket.
    private func refuse(_ failure: InboundFailure) {
        guard self.outbound.machine.mayWrite else { return }
        self.logger.info("closing connection: \(failure.closeFrame.reason)", metadata: self.metadata(["code": "\(failure.closeFrame.wireCode ?? 0)"]))
        self.pending = []
        self.outbound.close(failure.closeFrame)
    }

    /// Fails the connection (RFC 6455 7.1.7) after a protocol violation or invalid UTF-8: close
    /// frame, then the socket, without waiting for the peer's answer.
    private func fail(_ failure: InboundFailure) {
        if case .closed = self.outbound.machine.phase { return }
        self.logger.info("closing connection: \(failure.closeFrame.reason)", metadata: self.metadata(["code": "\(failure.closeFrame.wireCode ?? 0)"]))
        self.pending = []
        self.outbound.fail(failure.closeFrame)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if !context.channel.isWritable, self.outbound.outboundLimitExceeded() {
            self.connection.slot.fanout.remove(self.connection)
            self.connection.slot.metrics.slowConsumers.increment()
            self.logger.info("slow consumer: outbound buffer limit exceeded, closing", metadata: self.metadata())
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let failure = InboundFailure(error, maxMessageSize: self.maxMessageSize) else {
            // The peer went away (reset, broken pipe): expected, not an error of ours.
            self.logger.debug("connection error: \(error)", metadata: self.metadata())
            context.close(promise: nil)
            return
        }
        if failure.keepsHandshake {
            self.refuse(failure)
        } else {
            self.fail(failure)
        }
    }

    // MARK: Sessions

    /// Sends `ready`, then waits (up to `resume_wait`) for where to resume: `last_seq` in the URL
    /// decides at once; otherwise a `resume` first message, or else every event still held.
    private func attach(to follows: FollowedLog, context: ChannelHandlerContext) {
        let session = follows.log
        session.subscribe(self.connection)
        let readySeq = session.lastSeq
        self.outbound.write(.text(Connection.readyMessage(session, seq: readySeq)))
        self.outbound.flush()
        let query = self.connection.query
        let point = query["last_seq"].flatMap { UInt64($0) }.map {
            SessionCursor.ResumePoint(lastSeq: $0, epoch: query["epoch"])
        }
        // An endpoint history (not a session): without last_seq the client wants what happens
        // from now on; its initial payload is the state.
        let liveOnly: Bool
        if case .endpointHistory = follows { liveOnly = true } else { liveOnly = false }
        self.state.cursor = SessionCursor(
            session: session,
            readySeq: readySeq,
            resumePoint: point ?? (liveOnly ? .init(lastSeq: readySeq, epoch: session.epoch) : nil),
            liveOnly: liveOnly,
            requestedResume: point != nil
        )
        guard point == nil, !liveOnly else { return }
        let connection = self.connection
        context.eventLoop.assumeIsolated().scheduleTask(in: .interval(session.settings.resumeWait)) {
            connection.updateSessionCursor { cursor in
                if cursor.resumePoint == nil {
                    cursor.resumePoint = .init(lastSeq: 0, epoch: nil)
                }
            }
        }
    }
}

@available(*, unavailable)
extension WebSocketConnectionHandler: Sendable {}
