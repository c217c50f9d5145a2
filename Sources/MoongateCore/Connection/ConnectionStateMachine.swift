import NIOCore
import NIOWebSocket

/// The life of one WebSocket connection as a value: each event returns what to do, and
/// `OutboundGate` and the connection's handler carry it out. Every fact about where a
/// connection stands lives here, once: joining (broadcasts held until its initial payload is
/// out), open, closing (our close frame sent, the peer's awaited), closed; how many of its
/// batches are with the script; and its keep-alive deadlines. Pure, so every transition is
/// tested without a socket or a clock.
struct ConnectionStateMachine {
    enum Phase: Equatable {
        /// The initial payload is being computed; broadcasts meanwhile wait here, in order.
        case joining(held: [ByteBuffer])
        case open
        /// A close frame with `code` has gone out: nothing may follow it (RFC 6455 5.5.1).
        case closing(code: WebSocketErrorCode)
        /// `code` is what is reported: the one exchanged, nil if none was (1006).
        case closed(code: WebSocketErrorCode?)
    }

    enum CloseAction: Equatable {
        case none
        /// Write the close frame; then close the socket, or wait (bounded) for the peer's answer.
        case send(CloseFrame, then: AfterCloseFrame)
        case closeSocket
    }

    enum AfterCloseFrame: Equatable {
        case closeSocket
        case awaitPeer
    }

    enum BroadcastAction: Equatable {
        case write
        case held
        /// Closing or closed: the broadcast is not for this client any more.
        case drop
        /// Too many held while joining: the client is better off reconnecting.
        case close(CloseAction)
    }

    enum KeepAliveAction: Equatable {
        /// Send `ping` (if any) and come back at `next`.
        case wait(ping: ByteBuffer?, next: NIODeadline)
        /// A ping went unanswered past its timeout: drop the socket.
        case closeSocket
        /// No longer open: nothing more to schedule.
        case stop
    }

    /// Most broadcasts a joining client may have waiting; a script that takes this long to compute
    /// an initial payload is not keeping up.
    static let heldBroadcastLimit = 4096
    static let notKeepingUp = CloseFrame(code: .unknown(1013), reason: "the endpoint is not keeping up: try again later")
    /// While pings are off, how often to look whether a reload turned them on.
    static let disabledPingRecheck: Double = 5

    private(set) var phase: Phase
    /// Batches of this client's events (its connect included) with the script and not finished.
    /// While any are, the I/O loop must not answer a message itself: its reply would overtake theirs.
    private(set) var scriptWork = 0
    private var pings = PingLedger()
    private var nextPingAt = NIODeadline.distantFuture
    /// When to check that the ping sent at `sentAt` (the oldest unanswered) got its pong.
    private var pongCheck: (due: NIODeadline, sentAt: NIODeadline)?

    /// A client of an endpoint starts joining; one with nothing to compute (the console feed) starts open.
    init(joining: Bool = true) {
        self.phase = joining ? .joining(held: []) : .open
    }

    /// No close frame has gone out: frames may still be written and the peer's messages are wanted.
    var mayWrite: Bool {
        switch self.phase {
        case .joining, .open: true
        case .closing, .closed: false
        }
    }

    var isOpen: Bool {
        if case .open = self.phase { return true }
        return false
    }

    var isJoining: Bool {
        if case .joining = self.phase { return true }
        return false
    }

    /// The I/O loop may answer a message itself only while nothing of this client's is with the script.
    var mayAnswerDirectly: Bool { self.scriptWork == 0 && self.mayWrite }

    /// The close code to report once the socket is gone (nil: none was exchanged).
    var closeCode: WebSocketErrorCode? {
        switch self.phase {
        case .closing(let code): code
        case .closed(let code): code
        case .joining, .open: nil
        }
    }

    // MARK: The script

    /// A batch of this client's events (its connect included) went to the script.
    mutating func scriptStarted() {
        self.scriptWork += 1
    }

    mutating func scriptFinished() {
        precondition(self.scriptWork > 0, "a script batch finished that was never started")
        self.scriptWork -= 1
    }

    /// The script finished the connect and its initial payload goes out now: returns the
    /// broadcasts held meanwhile, to be written right after it; nil if the client is no longer
    /// joining (it closed or went first).
    mutating func joined() -> [ByteBuffer]? {
        self.scriptFinished()
        guard case .joining(let held) = self.phase else { return nil }
        self.phase = .open
        return held
    }

    mutating func broadcastArrived(_ frame: ByteBuffer) -> BroadcastAction {
        switch self.phase {
        case .open:
            return .write
        case .joining(var held):
            guard held.count < Self.heldBroadcastLimit else {
                return .close(self.closeRequested(Self.notKeepingUp))
            }
            self.phase = .open  // releases the array so the append below does not copy it
            held.append(frame)
            self.phase = .joining(held: held)
            return .held
        case .closing, .closed:
            return .drop
        }
    }

    // MARK: Closing

    /// The host closes (a script's `conn:close`, a reload, shutdown, a limit): close frame, then
    /// the peer's answer, awaited for at most the close timeout.
    mutating func closeRequested(_ frame: CloseFrame) -> CloseAction {
        guard self.mayWrite else { return .none }
        self.phase = .closing(code: frame.code ?? .normalClosure)
        return .send(frame, then: .awaitPeer)
    }

    /// A protocol violation (RFC 6455 7.1.7): close frame, then the socket, without waiting.
    mutating func failed(_ frame: CloseFrame) -> CloseAction {
        switch self.phase {
        case .joining, .open:
            self.phase = .closed(code: frame.code)
            return .send(frame, then: .closeSocket)
        case .closing:
            // Our close frame is out already; only the socket is left. The failure is what is reported.
            self.phase = .closed(code: frame.code)
            return .closeSocket
        case .closed:
            return .none
        }
    }

    /// The peer's close frame: answered and the socket closed; or, if it answers ours, the socket closed.
    mutating func peerClosed(payload: ByteBuffer) -> CloseAction {
        switch self.phase {
        case .joining, .open:
            let answer = CloseFrame.answer(toPeer: payload)
            self.phase = .closed(code: answer.peerCode)
            return .send(answer.reply, then: .closeSocket)
        case .closing(let code):
            self.phase = .closed(code: code)
            return .closeSocket
        case .closed:
            return .none
        }
    }

    /// The peer did not answer our close frame in time.
    mutating func closeTimedOut() -> CloseAction {
        guard case .closing(let code) = self.phase else { return .none }
        self.phase = .closed(code: code)
        return .closeSocket
    }

    /// More than the outbound limit waits for this client: it is not reading, stop feeding it.
    mutating func outboundLimitExceeded() -> CloseAction {
        self.closeRequested(CloseFrame(code: .policyViolation, reason: "slow consumer: outbound buffer limit exceeded"))
    }

    /// The socket is gone; returns the close code to report (nil: none was exchanged, 1006).
    mutating func socketClosed() -> WebSocketErrorCode? {
        let code = self.closeCode
        self.phase = .closed(code: code)
        return code
    }

    // MARK: Keep-alive

    /// Returns when keep-alive is first due; `pingEvery` nil while the endpoint sends no pings.
    mutating func startKeepAlive(now: NIODeadline, pingEvery: Double?) -> NIODeadline {
        self.nextPingAt = now + .interval(pingEvery ?? Self.disabledPingRecheck)
        return self.nextPingAt
    }

    /// The time asked for has come. `pingEvery` and `pingTimeout` are the endpoint's now: a
    /// reload may change them.
    mutating func keepAliveDue(now: NIODeadline, pingEvery: Double?, pingTimeout: Double) -> KeepAliveAction {
        guard self.mayWrite else { return .stop }
        if let check = self.pongCheck, now >= check.due {
            self.pongCheck = nil
            if self.pings.isUnanswered(since: check.sentAt) {
                self.phase = .closed(code: nil)
                return .closeSocket
            }
            if let since = self.pings.oldestUnanswered {
                self.pongCheck = (since + .interval(pingTimeout), since)
            }
        }
        var ping: ByteBuffer?
        if now >= self.nextPingAt {
            if let pingEvery {
                ping = self.pings.pingSent(at: now)
                if self.pongCheck == nil {
                    self.pongCheck = (now + .interval(pingTimeout), now)
                }
                self.nextPingAt = now + .interval(pingEvery)
            } else {
                self.nextPingAt = now + .interval(Self.disabledPingRecheck)
            }
        }
        return .wait(ping: ping, next: min(self.nextPingAt, self.pongCheck?.due ?? self.nextPingAt))
    }

    /// Any pong answers every ping sent so far.
    mutating func pongReceived() {
        self.pings.pongReceived()
    }
}

/// Ping bookkeeping: when the oldest unanswered ping went out, and a counter for the payloads.
struct PingLedger {
    private(set) var oldestUnanswered: NIODeadline?
    private var counter: UInt64 = 0

    mutating func pingSent(at time: NIODeadline) -> ByteBuffer {
        if self.oldestUnanswered == nil {
            self.oldestUnanswered = time
        }
        self.counter += 1
        var payload = ByteBuffer()
        payload.writeInteger(self.counter)
        return payload
    }

    mutating func pongReceived() {
        self.oldestUnanswered = nil
    }

    /// True if no pong has arrived since the ping sent at `time`.
    func isUnanswered(since time: NIODeadline) -> Bool {
        guard let oldestUnanswered = self.oldestUnanswered else { return false }
        return oldestUnanswered <= time
    }
}
