import Logging
import NIOCore
import NIOWebSocket

/// The protocol side of one WebSocket connection, on its I/O loop: the closing handshake,
/// ping/pong keep-alive, UTF-8 validation, and handing complete messages to the endpoint's
/// script in one batch per socket read.
final class WebSocketConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private enum CloseState {
        case open
        /// We sent a close frame and wait for the peer's.
        case closeSent
        case closed
    }

    /// How long a peer may take to answer our close frame.
    static let closeTimeout: TimeAmount = .seconds(2)

    private let connection: Connection
    private let registry: ConnectionRegistry
    private let maxMessageSize: Int
    private var rateLimit: MessageRateLimit?
    /// The host's logger; the connection's metadata is added per line, only when one is logged.
    private let logger: Logger
    private var closeState = CloseState.open
    private var closeCode: WebSocketErrorCode?
    private var pending: [InboundMessage] = []
    /// The endpoint's binding as read once for the current socket read: its routing decides the
    /// batch's messages and its runtime gets them.
    private var readBinding: EndpointBinding?
    private var needsFlush = false
    private var keepAlive = KeepAlive()
    private let keepAliveWheels: KeepAliveWheels
    private var keepAliveWheel: KeepAliveWheel?
    var keepAliveSlot: Int?
    /// Kept for the keep-alive wheel's calls; nil outside the pipeline.
    private var context: ChannelHandlerContext?
    private var nextPingAt = NIODeadline.distantFuture
    /// When to check that the ping sent at `pingSentAt` (the oldest unanswered) got its pong.
    private var pongCheck: (deadline: NIODeadline, pingSentAt: NIODeadline)?
    private var closeTimeoutTask: Scheduled<Void>?

    init(
        connection: Connection,
        registry: ConnectionRegistry,
        keepAlive: KeepAliveWheels,
        maxMessageSize: Int,
        maxMessageRate: Double,
        logger: Logger
    ) {
        self.connection = connection
        self.registry = registry
        self.keepAliveWheels = keepAlive
        self.maxMessageSize = maxMessageSize
        self.rateLimit = maxMessageRate > 0 ? MessageRateLimit(perSecond: maxMessageRate) : nil
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.registry.add(self.connection)
        self.connection.slot.metrics.connectionOpened()
        guard let binding = self.connection.slot.binding else {
            self.startClosing(code: .goingAway, reason: "endpoint removed", context: context)
            return
        }
        self.logger.debug("client connected", metadata: self.metadata(["path": "\(self.connection.path)"]))
        self.startKeepAlive(context: context)
        // In the fan-out from the first moment, so no broadcast is missed; those that come before
        // the initial payload wait for it (see OutboundBatch's join).
        self.connection.slot.fanout.add(self.connection)
        if let session = self.connection.session {
            self.attach(to: session, context: context)
        }
        self.connection.onLoop.value.scriptWork += 1
        if binding.spec.fixedOpen {
            // Nothing for the script to compute: join here, without a trip to its executor.
            let initial = binding.spec.initialText.map(WebSocketFrame.text)
            OutboundBatch.perform([.join(self.connection, initial: initial)], on: context.eventLoop)
        } else {
            binding.runtime.connect(self.connection)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.closeState = .closed
        self.stopKeepAlive()
        self.closeTimeoutTask?.cancel()
        self.connection.onLoop.value.preEncodedWriter = nil
        self.connection.slot.fanout.remove(self.connection)
        self.connection.session?.unsubscribe(self.connection)
        // Queue on_close before leaving the registry: shutdown waits for the registry to empty
        // and then retires the scripts, which runs what was queued first.
        self.connection.slot.binding?.runtime.disconnect(self.connection, code: self.closeCode)
        self.registry.remove(self.connection)
        self.connection.slot.metrics.connectionClosed(code: self.closeCode.map { UInt16(webSocketErrorCode: $0) })
        self.logger.debug("client disconnected", metadata: self.metadata(["code": "\(self.closeCode.map { UInt16(webSocketErrorCode: $0) } ?? 1006)"]))
        context.fireChannelInactive()
    }

    private func metadata(_ extra: Logger.Metadata = [:]) -> Logger.Metadata {
        extra.merging(["endpoint": "\(self.connection.slot.pattern)", "connection": "\(self.connection.id)"]) { own, _ in own }
    }

    // MARK: Reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = self.unwrapInboundIn(data)
        guard self.closeState == .open || frame.opcode == .connectionClose || frame.opcode == .pong else {
            return  // closing: data from the peer is no longer wanted
        }
        if frame.opcode == .text || frame.opcode == .binary {
            if frame.length > self.maxMessageSize {
                return self.refuse(code: .messageTooLarge, reason: "message larger than \(self.maxMessageSize) bytes", context: context)
            }
            self.connection.slot.metrics.received(bytes: frame.length)
            if self.rateLimit?.admit(now: .now()) == false {
                return self.refuse(code: .policyViolation, reason: "message rate limit exceeded", context: context)
            }
        }
        switch frame.opcode {
        case .text:
            let text = frame.unmaskedData
            guard text.isValidUTF8 else {
                return self.fail(code: .dataInconsistentWithMessage, reason: "invalid UTF-8 in a text message", context: context)
            }
            if self.connection.session != nil, let cursor = self.connection.onLoop.value.sessionCursor, cursor.resumePoint == nil,
                self.resumeFromFirstMessage(text)
            {
                return
            }
            if self.readBinding == nil {
                self.readBinding = self.connection.slot.binding
            }
            guard let routing = self.readBinding?.routing else { return }
            switch routing.decide(text) {
            case .reply(let reply, _) where self.pending.isEmpty && self.connection.onLoop.value.scriptWork == 0:
                self.connection.slot.metrics.countReply(reply)
                context.write(self.wrapOutboundOut(.text(reply)), promise: nil)
                self.needsFlush = true
            case .reply(_, let id), .script(let id):
                self.pending.append(.text(text, id: id))
            }
        case .binary:
            self.pending.append(.binary(frame.unmaskedData))
        case .ping:
            context.write(self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
            self.needsFlush = true
        case .pong:
            self.keepAlive.pongReceived()
        case .connectionClose:
            self.receivedClose(frame.unmaskedData, context: context)
        default:
            // Continuations are joined by the aggregator and reserved opcodes stopped by the validator.
            self.fail(code: .protocolError, reason: "unexpected frame", context: context)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if !self.pending.isEmpty {
            let messages = self.pending
            self.pending = []
            if let runtime = (self.readBinding ?? self.connection.slot.binding)?.runtime {
                self.connection.onLoop.value.scriptWork += 1
                runtime.deliver(messages, from: self.connection)
            }
        }
        self.readBinding = nil
        if self.needsFlush {
            self.needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    // MARK: Closing

    private func receivedClose(_ payload: ByteBuffer, context: ChannelHandlerContext) {
        switch self.closeState {
        case .closed:
            return
        case .closeSent:
            self.closeState = .closed
            context.close(promise: nil)
            return
        case .open:
            break
        }
        var payload = payload
        let reply: WebSocketErrorCode?
        switch payload.readableBytes {
        case 0:
            reply = nil
            self.closeCode = nil
        case 1:
            reply = .protocolError
        default:
            let code = payload.readInteger(as: UInt16.self)!
            if !CloseCode.isValidReceived(code) {
                reply = .protocolError
            } else if !payload.isValidUTF8 {
                reply = .dataInconsistentWithMessage
            } else {
                reply = WebSocketErrorCode(codeNumber: Int(code))
            }
            self.closeCode = WebSocketErrorCode(codeNumber: Int(code))
        }
        self.markClosing()
        self.logger.debug("client closed the connection", metadata: self.metadata(["code": "\(self.closeCode.map { UInt16(webSocketErrorCode: $0) } ?? 1005)"]))
        self.closeState = .closed
        var data = context.channel.allocator.buffer(capacity: 2)
        if let reply {
            data.write(webSocketErrorCode: reply)
        }
        let loopBoundContext = context.loopBound
        context.writeAndFlush(self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: data)))
            .whenComplete { _ in loopBoundContext.value.close(promise: nil) }
    }

    /// A close frame is about to go out: nothing may follow it (RFC 6455 5.5.1), broadcasts included.
    private func markClosing() {
        self.connection.onLoop.value.isClosing = true
        self.connection.slot.fanout.remove(self.connection)
    }

    /// Sends a close frame and waits (bounded) for the peer's answer.
    private func startClosing(code: WebSocketErrorCode, reason: String, context: ChannelHandlerContext) {
        guard case .open = self.closeState else { return }
        self.closeState = .closeSent
        self.markClosing()
        self.closeCode = code
        self.stopKeepAlive()
        var data = context.channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        data.write(webSocketErrorCode: code)
        data.writeString(reason)
        context.writeAndFlush(self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: data)), promise: nil)
        let loopBoundContext = context.loopBound
        self.closeTimeoutTask = context.eventLoop.assumeIsolated().scheduleTask(in: Self.closeTimeout) {
            loopBoundContext.value.close(promise: nil)
        }
    }

    /// Closes because of what the peer sent (too large, too fast) while the protocol is still
    /// intact: the closing handshake runs, so the peer reads our close frame instead of
    /// losing it to a reset when it keeps sending into a closed socket.
    private func refuse(code: WebSocketErrorCode, reason: String, context: ChannelHandlerContext) {
        self.logger.info("closing connection: \(reason)", metadata: self.metadata(["code": "\(UInt16(webSocketErrorCode: code))"]))
        self.pending = []
        self.startClosing(code: code, reason: reason, context: context)
    }

    /// Fails the connection (RFC 6455 7.1.7) after a protocol violation or invalid UTF-8: close
    /// frame with `code`, then the socket, without waiting for the peer's answer.
    private func fail(code: WebSocketErrorCode, reason: String, context: ChannelHandlerContext) {
        guard !(self.closeState == .closed) else { return }
        self.logger.info("closing connection: \(reason)", metadata: self.metadata(["code": "\(UInt16(webSocketErrorCode: code))"]))
        self.closeState = .closed
        self.markClosing()
        self.closeCode = code
        self.pending = []
        var data = context.channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        data.write(webSocketErrorCode: code)
        data.writeString(String(reason.utf8.prefix(123)) ?? "")
        let loopBoundContext = context.loopBound
        context.writeAndFlush(self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: data)))
            .whenComplete { _ in loopBoundContext.value.close(promise: nil) }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if !context.channel.isWritable, case .open = self.closeState {
            // More than the outbound limit is waiting for this client: stop feeding it.
            self.connection.slot.fanout.remove(self.connection)
            self.connection.slot.metrics.slowConsumers.increment()
            self.logger.info("slow consumer: outbound buffer limit exceeded, closing", metadata: self.metadata())
            self.startClosing(code: .policyViolation, reason: "slow consumer: outbound buffer limit exceeded", context: context)
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let request = event as? CloseRequest {
            self.startClosing(code: request.code, reason: request.reason, context: context)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch error {
        case let decoding as NIOWebSocketError:
            switch decoding {
            case .invalidFrameLength:
                self.fail(code: .messageTooLarge, reason: "frame larger than the endpoint's message limit", context: context)
            case .fragmentedControlFrame:
                self.fail(code: .protocolError, reason: "fragmented control frame", context: context)
            case .multiByteControlFrameLength:
                self.fail(code: .protocolError, reason: "control frame longer than 125 bytes", context: context)
            }
        case let violation as FrameViolation:
            self.fail(code: .protocolError, reason: violation.description, context: context)
        case is InvalidUTF8:
            self.fail(code: .dataInconsistentWithMessage, reason: "invalid UTF-8 in a text message", context: context)
        case let aggregation as NIOWebSocketFrameAggregator.Error:
            switch aggregation {
            case .accumulatedFrameSizeIsTooLarge, .tooManyFragments:
                self.refuse(code: .messageTooLarge, reason: "message larger than \(self.maxMessageSize) bytes", context: context)
            default:
                self.fail(code: .protocolError, reason: "invalid fragmentation", context: context)
            }
        default:
            // The peer went away (reset, broken pipe): expected, not an error of ours.
            self.logger.debug("connection error: \(error)", metadata: self.metadata())
            context.close(promise: nil)
        }
    }

    // MARK: Sessions

    /// Sends `ready`, then waits (up to `resume_wait`) for where to resume: `last_seq` in the URL
    /// decides at once; otherwise a `resume` first message, or else every event still held.
    private func attach(to session: Session, context: ChannelHandlerContext) {
        session.subscribe(self.connection)
        let readySeq = session.lastSeq
        context.writeAndFlush(self.wrapOutboundOut(.text(Connection.readyMessage(session, seq: readySeq))), promise: nil)
        let query = self.connection.query
        let point = query["last_seq"].flatMap { UInt64($0) }.map {
            SessionCursor.ResumePoint(lastSeq: $0, epoch: query["epoch"])
        }
        // An endpoint history (not a session): without last_seq the client wants what happens
        // from now on; its initial payload is the state.
        let liveOnly = self.connection.slot.binding?.spec.session == nil
        self.connection.onLoop.value.sessionCursor = SessionCursor(
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

    /// A session client's first message: `{"type":"resume","last_seq":N,"epoch":E}` sets where
    /// delivery resumes (and is not routed further); anything else means "everything held".
    private func resumeFromFirstMessage(_ text: ByteBuffer) -> Bool {
        let point: SessionCursor.ResumePoint? = text.withUnsafeReadableBytes { bytes in
            guard case .object(let envelope) = JSONEnvelope.scan(bytes), envelope.type == .string("resume") else {
                return nil
            }
            let lastSeq = envelope.lastSeq.flatMap { UInt64(String(decoding: bytes[$0], as: UTF8.self)) } ?? 0
            let epoch = envelope.epoch.map { String(decoding: bytes[$0], as: UTF8.self).trimmingQuotes }
            return SessionCursor.ResumePoint(lastSeq: lastSeq, epoch: epoch)
        }
        self.connection.updateSessionCursor { cursor in
            cursor.resumePoint = point ?? .init(lastSeq: 0, epoch: nil)
        }
        return point != nil
    }

    // MARK: Keep-alive

    private func startKeepAlive(context: ChannelHandlerContext) {
        self.context = context
        self.keepAliveWheel = self.keepAliveWheels.wheel(on: context.eventLoop)
        let now = NIODeadline.now()
        self.nextPingAt = now + .interval(self.pingEvery ?? KeepAlive.disabledRecheck)
        self.scheduleKeepAlive()
    }

    private func stopKeepAlive() {
        self.keepAliveWheel?.cancel(self)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.stopKeepAlive()
        self.context = nil
    }

    /// The endpoint's ping interval now (a reload may change it); nil while pings are off.
    private var pingEvery: Double? {
        guard let every = self.connection.slot.binding?.spec.pingEvery, every > 0 else { return nil }
        return every
    }

    private func scheduleKeepAlive() {
        let next = min(self.nextPingAt, self.pongCheck?.deadline ?? self.nextPingAt)
        self.keepAliveWheel?.schedule(self, at: next)
    }
}

extension WebSocketConnectionHandler: KeepAliveParticipant {
    func keepAliveDue(now: NIODeadline) {
        guard case .open = self.closeState, let context = self.context, let spec = self.connection.slot.binding?.spec else {
            return
        }
        if let check = self.pongCheck, now >= check.deadline {
            self.pongCheck = nil
            if self.keepAlive.isUnanswered(since: check.pingSentAt) {
                self.logger.info("peer did not answer a ping within \(spec.pingTimeout.formattedSeconds): closing", metadata: self.metadata())
                self.connection.slot.metrics.missedPongs.increment()
                self.closeState = .closed
                context.close(promise: nil)
                return
            }
            if let since = self.keepAlive.oldestUnanswered {
                self.pongCheck = (since + .interval(spec.pingTimeout), since)
            }
        }
        if now >= self.nextPingAt {
            if spec.pingEvery > 0 {
                let payload = self.keepAlive.pingSent(at: now)
                context.writeAndFlush(self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .ping, data: payload)), promise: nil)
                if self.pongCheck == nil {
                    self.pongCheck = (now + .interval(spec.pingTimeout), now)
                }
                self.nextPingAt = now + .interval(spec.pingEvery)
            } else {
                self.nextPingAt = now + .interval(KeepAlive.disabledRecheck)
            }
        }
        self.scheduleKeepAlive()
    }
}

@available(*, unavailable)
extension WebSocketConnectionHandler: Sendable {}

/// Ping bookkeeping: when the oldest unanswered ping went out. Any pong answers all of them.
struct KeepAlive {
    /// While pings are off, how often to look whether a reload turned them on.
    static let disabledRecheck: Double = 5
    private var unansweredSince: NIODeadline?
    var oldestUnanswered: NIODeadline? { self.unansweredSince }
    private var counter: UInt64 = 0

    mutating func pingSent(at time: NIODeadline) -> ByteBuffer {
        if self.unansweredSince == nil {
            self.unansweredSince = time
        }
        self.counter += 1
        var payload = ByteBuffer()
        payload.writeInteger(self.counter)
        return payload
    }

    mutating func pongReceived() {
        self.unansweredSince = nil
    }

    /// True if no pong has arrived since the ping sent at `time`.
    func isUnanswered(since time: NIODeadline) -> Bool {
        guard let unansweredSince = self.unansweredSince else { return false }
        return unansweredSince <= time
    }
}
