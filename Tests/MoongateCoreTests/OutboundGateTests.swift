import NIOCore
import NIOEmbedded
import NIOWebSocket
import XCTest

@testable import MoongateCore

/// A connection's outbound gate on an embedded channel with NIO's frame encoder: what reaches
/// the wire, in what order, and that nothing follows a close frame. No socket, no real clock.
final class OutboundGateTests: XCTestCase {
    private final class Tail: ChannelInboundHandler {
        typealias InboundIn = NIOAny
    }

    private struct Frame: Equatable {
        var opcode: UInt8
        var payload: [UInt8]

        static func text(_ text: String) -> Frame { Frame(opcode: 0x1, payload: Array(text.utf8)) }
        static func close(_ code: UInt16, _ reason: String = "") -> Frame {
            Frame(opcode: 0x8, payload: [UInt8(code >> 8), UInt8(code & 0xFF)] + Array(reason.utf8))
        }
    }

    private var channel: EmbeddedChannel!
    private var gate: OutboundGate!
    private var wire: [UInt8] = []

    override func setUpWithError() throws {
        self.channel = EmbeddedChannel()
        let tail = Tail()
        try self.channel.pipeline.syncOperations.addHandlers([WebSocketFrameEncoder(), tail])
        try self.channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        self.gate = OutboundGate(channel: self.channel)
        self.gate.attach(
            frames: try self.channel.pipeline.syncOperations.context(handler: tail),
            encoded: try self.channel.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)
        )
    }

    override func tearDownWithError() throws {
        _ = try? self.channel.finish()
    }

    private func serialized(_ text: String) -> ByteBuffer {
        ServerFrame.encode(.text, payload: ByteBuffer(string: text))
    }

    /// Every frame flushed so far (server frames: unmasked, so the parse is short).
    private func flushedFrames() throws -> [Frame] {
        while let buffer = try self.channel.readOutbound(as: ByteBuffer.self) {
            self.wire += buffer.readableBytesView
        }
        var frames: [Frame] = []
        var index = 0
        while index + 2 <= self.wire.count {
            var length = Int(self.wire[index + 1] & 0x7F)
            var header = 2
            if length == 126 {
                length = Int(self.wire[index + 2]) << 8 | Int(self.wire[index + 3])
                header = 4
            } else if length == 127 {
                length = (0..<8).reduce(0) { $0 << 8 | Int(self.wire[index + 2 + $1]) }
                header = 10
            }
            guard index + header + length <= self.wire.count else { break }
            frames.append(Frame(opcode: self.wire[index] & 0x0F, payload: Array(self.wire[(index + header)..<(index + header + length)])))
            index += header + length
        }
        return frames
    }

    func testBroadcastsWhileJoiningFollowTheInitialPayloadInOrder() throws {
        XCTAssertTrue(self.gate.deliver(broadcast: self.serialized("b1"), compressed: nil, flushNow: true))
        XCTAssertTrue(self.gate.deliver(broadcast: self.serialized("b2"), compressed: nil, flushNow: true))
        XCTAssertEqual(try self.flushedFrames(), [], "held, not written, while joining")
        self.gate.scriptStarted()
        XCTAssertTrue(self.gate.join(first: [.text("initial")]))
        self.gate.flush()
        XCTAssertTrue(self.gate.deliver(broadcast: self.serialized("b3"), compressed: nil, flushNow: true))
        XCTAssertEqual(try self.flushedFrames(), [.text("initial"), .text("b1"), .text("b2"), .text("b3")])
        XCTAssertEqual(self.gate.machine.scriptWork, 0)
    }

    func testNothingFollowsACloseFrame() throws {
        self.gate.scriptStarted()
        self.gate.join(first: [])
        self.gate.write(.text("before"))
        self.gate.close(CloseFrame(code: .normalClosure, reason: "bye"))
        XCTAssertFalse(self.gate.write(.text("reply after close")))
        XCTAssertFalse(self.gate.write(serialized: self.serialized("serialised after close")))
        XCTAssertFalse(self.gate.deliver(broadcast: self.serialized("broadcast after close"), compressed: nil, flushNow: true))
        self.gate.close(CloseFrame(code: .goingAway))
        self.gate.flush()
        XCTAssertEqual(try self.flushedFrames(), [.text("before"), .close(1000, "bye")], "queued data first, one close frame last")
        XCTAssertTrue(self.channel.isActive, "waiting for the peer's answer")
    }

    func testAnUnansweredCloseDropsTheSocketAfterTheTimeout() throws {
        self.gate.close(CloseFrame(code: .goingAway, reason: "server shutting down"))
        self.channel.embeddedEventLoop.advanceTime(by: OutboundGate.closeTimeout - .milliseconds(1))
        XCTAssertTrue(self.channel.isActive)
        self.channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        XCTAssertFalse(self.channel.isActive)
        XCTAssertEqual(self.gate.socketClosed(), .goingAway)
    }

    func testThePeersCloseIsAnsweredThenTheSocketCloses() throws {
        var payload = ByteBuffer()
        payload.writeInteger(UInt16(4000))
        self.gate.peerClosed(payload: payload)
        XCTAssertEqual(try self.flushedFrames(), [Frame(opcode: 0x8, payload: [0x0F, 0xA0])])
        self.channel.embeddedEventLoop.run()
        XCTAssertFalse(self.channel.isActive)
    }

    func testAMalformedPeerCloseIsAnswered1002() throws {
        var payload = ByteBuffer()
        payload.writeInteger(UInt16(1005))
        self.gate.peerClosed(payload: payload)
        XCTAssertEqual(try self.flushedFrames(), [.close(1002)])
    }

    func testWritesAreFlushedAtTheThresholdAndOtherwiseWhenAsked() throws {
        self.gate.write(.text("small"))
        XCTAssertEqual(try self.flushedFrames(), [], "not flushed yet")
        XCTAssertGreaterThan(self.gate.unflushedBytes, 0)
        let large = String(repeating: "x", count: OutboundGate.flushThreshold)
        self.gate.write(.text(large))
        XCTAssertEqual(try self.flushedFrames().count, 2, "past the threshold the gate flushes by itself")
        XCTAssertEqual(self.gate.unflushedBytes, 0)
        self.gate.write(.text("tail"))
        self.gate.flushIfNeeded()
        XCTAssertEqual(try self.flushedFrames().last, .text("tail"))
    }

    func testTooManyHeldBroadcastsCloseTheJoiningClientWith1013() throws {
        let frame = self.serialized("b")
        for _ in 0..<ConnectionStateMachine.heldBroadcastLimit {
            XCTAssertTrue(self.gate.deliver(broadcast: frame, compressed: nil, flushNow: false))
        }
        XCTAssertFalse(self.gate.deliver(broadcast: frame, compressed: nil, flushNow: false))
        XCTAssertEqual(try self.flushedFrames(), [.close(1013, "the endpoint is not keeping up: try again later")])
        self.gate.scriptStarted()
        XCTAssertFalse(self.gate.join(first: [.text("too late")]), "a closing client does not join")
        self.gate.flush()
        XCTAssertEqual(try self.flushedFrames().count, 1)
    }
}
