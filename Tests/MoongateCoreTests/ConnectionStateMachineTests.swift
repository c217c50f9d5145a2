import NIOCore
import NIOWebSocket
import XCTest

@testable import MoongateCore

/// Every transition of a connection's state machine, without a socket or a clock: events in,
/// actions out; keep-alive deadlines driven by explicit times.
final class ConnectionStateMachineTests: XCTestCase {
    private let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    private func frame(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }
    private func closePayload(_ code: UInt16, _ reason: String = "") -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(code)
        buffer.writeString(reason)
        return buffer
    }

    // MARK: Joining

    func testBroadcastsWhileJoiningAreHeldAndReleasedInOrderOnJoin() {
        var machine = ConnectionStateMachine()
        machine.scriptStarted()
        XCTAssertEqual(machine.broadcastArrived(self.frame("a")), .held)
        XCTAssertEqual(machine.broadcastArrived(self.frame("b")), .held)
        XCTAssertTrue(machine.mayWrite)
        XCTAssertFalse(machine.mayAnswerDirectly, "the connect is with the script")
        XCTAssertEqual(machine.joined(), [self.frame("a"), self.frame("b")])
        XCTAssertEqual(machine.phase, .open)
        XCTAssertEqual(machine.scriptWork, 0)
        XCTAssertTrue(machine.mayAnswerDirectly)
        XCTAssertEqual(machine.broadcastArrived(self.frame("c")), .write)
    }

    func testTooManyHeldBroadcastsCloseWith1013() {
        var machine = ConnectionStateMachine()
        machine.scriptStarted()
        for index in 0..<ConnectionStateMachine.heldBroadcastLimit {
            XCTAssertEqual(machine.broadcastArrived(self.frame("\(index)")), .held)
        }
        XCTAssertEqual(
            machine.broadcastArrived(self.frame("one too many")),
            .close(.send(ConnectionStateMachine.notKeepingUp, then: .awaitPeer))
        )
        XCTAssertEqual(machine.phase, .closing(code: .unknown(1013)))
        XCTAssertEqual(machine.broadcastArrived(self.frame("later")), .drop)
        XCTAssertNil(machine.joined(), "a client that is closing does not join")
        XCTAssertEqual(machine.scriptWork, 0, "the connect's work is finished all the same")
    }

    func testClientGoneBeforeJoiningDoesNotJoin() {
        var machine = ConnectionStateMachine()
        machine.scriptStarted()
        _ = machine.broadcastArrived(self.frame("a"))
        XCTAssertNil(machine.socketClosed())
        XCTAssertNil(machine.joined())
        XCTAssertEqual(machine.phase, .closed(code: nil))
    }

    func testRepliesWaitForScriptWorkInFlight() {
        var machine = ConnectionStateMachine(joining: false)
        XCTAssertTrue(machine.mayAnswerDirectly)
        machine.scriptStarted()
        machine.scriptStarted()
        machine.scriptFinished()
        XCTAssertFalse(machine.mayAnswerDirectly, "one batch is still with the script")
        machine.scriptFinished()
        XCTAssertTrue(machine.mayAnswerDirectly)
    }

    // MARK: Closing

    func testHostCloseSendsCloseFrameAndAwaitsThePeer() {
        var machine = ConnectionStateMachine(joining: false)
        let close = CloseFrame(code: .normalClosure, reason: "bye")
        XCTAssertEqual(machine.closeRequested(close), .send(close, then: .awaitPeer))
        XCTAssertEqual(machine.phase, .closing(code: .normalClosure))
        XCTAssertFalse(machine.mayWrite, "nothing may follow a close frame")
        XCTAssertFalse(machine.mayAnswerDirectly)
        XCTAssertEqual(machine.broadcastArrived(self.frame("x")), .drop)
        XCTAssertEqual(machine.closeRequested(CloseFrame(code: .goingAway)), .none, "one close frame only")
        XCTAssertEqual(machine.peerClosed(payload: self.closePayload(1000)), .closeSocket, "the peer's answer ends it")
        XCTAssertEqual(machine.phase, .closed(code: .normalClosure))
        XCTAssertEqual(machine.socketClosed(), .normalClosure)
    }

    func testHostCloseTimesOutWithoutAnAnswer() {
        var machine = ConnectionStateMachine(joining: false)
        _ = machine.closeRequested(CloseFrame(code: .goingAway, reason: "server shutting down"))
        XCTAssertEqual(machine.closeTimedOut(), .closeSocket)
        XCTAssertEqual(machine.closeTimedOut(), .none)
        XCTAssertEqual(machine.socketClosed(), .goingAway)
    }

    func testCloseTimeoutAfterTheAnswerDoesNothing() {
        var machine = ConnectionStateMachine(joining: false)
        _ = machine.closeRequested(CloseFrame(code: .normalClosure))
        _ = machine.peerClosed(payload: self.closePayload(1000))
        XCTAssertEqual(machine.closeTimedOut(), .none)
    }

    func testPeerCloseIsEchoedThenTheSocketCloses() {
        var machine = ConnectionStateMachine(joining: false)
        XCTAssertEqual(machine.peerClosed(payload: self.closePayload(4001, "done")), .send(CloseFrame(code: .unknown(4001)), then: .closeSocket))
        XCTAssertEqual(machine.socketClosed(), .unknown(4001))
        XCTAssertEqual(machine.peerClosed(payload: self.closePayload(1000)), .none)
    }

    func testPeerCloseWithoutPayloadIsAnsweredWithoutOne() {
        var machine = ConnectionStateMachine()
        XCTAssertEqual(machine.peerClosed(payload: ByteBuffer()), .send(CloseFrame(code: nil), then: .closeSocket))
        XCTAssertNil(machine.socketClosed(), "no code was exchanged (1005)")
    }

    func testInvalidPeerCloseCodesAreProtocolErrors() {
        for (payload, reply) in [
            (ByteBuffer(bytes: [0x03]), WebSocketErrorCode.protocolError),
            (self.closePayload(1005), .protocolError),
            (self.closePayload(1006), .protocolError),
            (self.closePayload(999), .protocolError),
            (self.closePayload(5000), .protocolError),
            (ByteBuffer(bytes: [0x03, 0xE8, 0xFF, 0xFE]), .dataInconsistentWithMessage),
        ] {
            var machine = ConnectionStateMachine(joining: false)
            XCTAssertEqual(machine.peerClosed(payload: payload), .send(CloseFrame(code: reply), then: .closeSocket), "\(payload)")
        }
    }

    func testFailureClosesAtOnce() {
        var machine = ConnectionStateMachine(joining: false)
        let close = CloseFrame(code: .protocolError, reason: "unexpected frame")
        XCTAssertEqual(machine.failed(close), .send(close, then: .closeSocket))
        XCTAssertEqual(machine.phase, .closed(code: .protocolError))
        XCTAssertEqual(machine.failed(close), .none)
        XCTAssertEqual(machine.closeRequested(close), .none)
    }

    func testFailureWhileClosingOnlyClosesTheSocket() {
        var machine = ConnectionStateMachine(joining: false)
        _ = machine.closeRequested(CloseFrame(code: .goingAway))
        XCTAssertEqual(machine.failed(CloseFrame(code: .protocolError)), .closeSocket, "no second close frame")
        XCTAssertEqual(machine.socketClosed(), .protocolError, "the failure is what is reported")
    }

    func testSlowConsumerClosesWith1008Once() {
        var machine = ConnectionStateMachine(joining: false)
        guard case .send(let close, .awaitPeer) = machine.outboundLimitExceeded() else {
            return XCTFail("a slow consumer is sent a close frame")
        }
        XCTAssertEqual(close.code, .policyViolation)
        XCTAssertEqual(machine.outboundLimitExceeded(), .none)
    }

    func testSocketGoneWhileOpenReportsNoCode() {
        var machine = ConnectionStateMachine(joining: false)
        XCTAssertNil(machine.socketClosed())
        XCTAssertFalse(machine.mayWrite)
        XCTAssertEqual(machine.broadcastArrived(self.frame("x")), .drop)
    }

    // MARK: Close frames

    func testCloseFrameCodesAServerMayNotSendBecome1011() {
        XCTAssertEqual(CloseFrame(code: .unknown(1005)).code, .unexpectedServerError)
        XCTAssertEqual(CloseFrame(code: .unknown(1006)).code, .unexpectedServerError)
        XCTAssertEqual(CloseFrame(code: .unknown(2999)).code, .unexpectedServerError)
        XCTAssertEqual(CloseFrame(code: .unknown(4999)).code, .unknown(4999))
    }

    func testCloseFrameReasonIsCutAtACharacterBoundary() {
        let reason = String(repeating: "é", count: 100)  // 200 bytes
        let close = CloseFrame(code: .normalClosure, reason: reason)
        XCTAssertEqual(close.reason.utf8.count, 122, "61 whole characters fit in 123 bytes")
        let frame = close.frame(allocator: ByteBufferAllocator())
        XCTAssertEqual(frame.opcode, .connectionClose)
        XCTAssertLessThanOrEqual(frame.data.readableBytes, 125)
        XCTAssertEqual(CloseFrame(code: nil, reason: "ignored").frame(allocator: ByteBufferAllocator()).data.readableBytes, 0)
    }

    // MARK: Keep-alive (explicit times, no clock)

    func testPingsGoOutEveryIntervalWhileAnswered() {
        var machine = ConnectionStateMachine(joining: false)
        XCTAssertEqual(machine.startKeepAlive(now: self.start, pingEvery: 1), self.start + .seconds(1))
        guard case .wait(let ping?, let next) = machine.keepAliveDue(now: self.start + .seconds(1), pingEvery: 1, pingTimeout: 0.5) else {
            return XCTFail("a ping is due")
        }
        XCTAssertEqual(ping.readableBytes, 8)
        XCTAssertEqual(next, self.start + .milliseconds(1500), "back at the pong deadline first")
        machine.pongReceived()
        guard case .wait(nil, let after) = machine.keepAliveDue(now: self.start + .milliseconds(1500), pingEvery: 1, pingTimeout: 0.5) else {
            return XCTFail("answered: nothing to do at the deadline")
        }
        XCTAssertEqual(after, self.start + .seconds(2))
        guard case .wait(_?, _) = machine.keepAliveDue(now: self.start + .seconds(2), pingEvery: 1, pingTimeout: 0.5) else {
            return XCTFail("the next ping is due")
        }
    }

    func testUnansweredPingClosesTheSocketAtItsTimeout() {
        var machine = ConnectionStateMachine(joining: false)
        _ = machine.startKeepAlive(now: self.start, pingEvery: 1)
        _ = machine.keepAliveDue(now: self.start + .seconds(1), pingEvery: 1, pingTimeout: 0.5)
        XCTAssertEqual(machine.keepAliveDue(now: self.start + .milliseconds(1500), pingEvery: 1, pingTimeout: 0.5), .closeSocket)
        XCTAssertEqual(machine.phase, .closed(code: nil), "reported as 1006: no close was exchanged")
        XCTAssertEqual(machine.keepAliveDue(now: self.start + .seconds(2), pingEvery: 1, pingTimeout: 0.5), .stop)
    }

    func testAPongForALaterPingAnswersTheEarlierOnes() {
        var machine = ConnectionStateMachine(joining: false)
        _ = machine.startKeepAlive(now: self.start, pingEvery: 1)
        // Timeout longer than the interval: a second ping goes out before the first's deadline.
        _ = machine.keepAliveDue(now: self.start + .seconds(1), pingEvery: 1, pingTimeout: 3)
        _ = machine.keepAliveDue(now: self.start + .seconds(2), pingEvery: 1, pingTimeout: 3)
        machine.pongReceived()
        guard case .wait = machine.keepAliveDue(now: self.start + .seconds(4), pingEvery: 1, pingTimeout: 3) else {
            return XCTFail("any pong answers every ping sent before it")
        }
    }

    func testPingsOffAreRecheckedForAReloadThatTurnsThemOn() {
        var machine = ConnectionStateMachine(joining: false)
        let first = machine.startKeepAlive(now: self.start, pingEvery: nil)
        XCTAssertEqual(first, self.start + .interval(ConnectionStateMachine.disabledPingRecheck))
        XCTAssertEqual(machine.keepAliveDue(now: first, pingEvery: nil, pingTimeout: 1), .wait(ping: nil, next: first + .interval(ConnectionStateMachine.disabledPingRecheck)))
        guard case .wait(_?, _) = machine.keepAliveDue(now: first + .interval(ConnectionStateMachine.disabledPingRecheck), pingEvery: 0.5, pingTimeout: 1) else {
            return XCTFail("pings turned on by a reload start at the next check")
        }
    }

    func testKeepAliveStopsOnceClosing() {
        var machine = ConnectionStateMachine(joining: false)
        _ = machine.startKeepAlive(now: self.start, pingEvery: 1)
        _ = machine.closeRequested(CloseFrame(code: .normalClosure))
        XCTAssertEqual(machine.keepAliveDue(now: self.start + .seconds(1), pingEvery: 1, pingTimeout: 1), .stop)
    }
}
