import NIOCore
import NIOEmbedded
import NIOWebSocket
import XCTest

import WebSocketDeflate
@testable import MoongateCore

/// permessage-deflate without sockets: which offers are accepted and what the 101 says, whole
/// messages compressed and inflated, and the frame validator collecting compressed fragments.
final class DeflateTests: XCTestCase {
    private let agreed = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

    func testOffersAreAcceptedOrDeclinedAsRFC7692Says() {
        let cases: [([String], String?)] = [
            (["permessage-deflate; client_max_window_bits"], self.agreed),
            (["permessage-deflate"], self.agreed),
            (["permessage-deflate; server_no_context_takeover; client_no_context_takeover"], self.agreed),
            (["permessage-deflate; server_max_window_bits=10"], self.agreed + "; server_max_window_bits=10"),
            (["permessage-deflate; server_max_window_bits=\"9\""], self.agreed + "; server_max_window_bits=9"),
            (["permessage-deflate; client_max_window_bits=12"], self.agreed),
            // zlib cannot deflate with an 8-bit window: that offer is declined, the next one taken.
            (["permessage-deflate; server_max_window_bits=8, permessage-deflate"], self.agreed),
            (["permessage-deflate; server_max_window_bits=8"], nil),
            (["permessage-deflate; server_max_window_bits"], nil),
            (["permessage-deflate; server_max_window_bits=16"], nil),
            (["permessage-deflate; server_max_window_bits=010"], nil),
            (["permessage-deflate; server_no_context_takeover=1"], nil),
            (["permessage-deflate; server_no_context_takeover; server_no_context_takeover"], nil),
            (["permessage-deflate; mystery"], nil),
            (["x-webkit-deflate-frame"], nil),
            (["x-webkit-deflate-frame", "permessage-deflate; server_max_window_bits=15"], self.agreed),
            ([], nil),
        ]
        for (offers, expected) in cases {
            XCTAssertEqual(DeflateParameters.negotiate(offers: offers)?.responseHeader, expected, "\(offers)")
        }
    }

    func testAMessageRoundTripsAndABombStopsAtTheLimit() throws {
        let message = ByteBuffer(string: String(repeating: #"{"type":"snapshot","value":42},"#, count: 200))
        let compressed = try XCTUnwrap(MessageDeflate.compress(message, windowBits: 15))
        XCTAssertLessThan(compressed.readableBytes, message.readableBytes / 10)
        XCTAssertEqual(try MessageDeflate.inflate(compressed, limit: message.readableBytes), message)
        // Nine-bit windows for a client that asked for them; the same message back.
        let narrow = try XCTUnwrap(MessageDeflate.compress(message, windowBits: 9))
        XCTAssertEqual(try MessageDeflate.inflate(narrow, limit: 1 << 20), message)

        let bomb = try XCTUnwrap(MessageDeflate.compress(ByteBuffer(repeating: 0, count: 10 << 20), windowBits: 15))
        // Compressed at the fastest level (large messages are): still over 200 to 1.
        XCTAssertLessThan(bomb.readableBytes, 50_000)
        XCTAssertThrowsError(try MessageDeflate.inflate(bomb, limit: 1 << 20)) { error in
            XCTAssertEqual(error as? MessageDeflate.InflateFailure, .tooLarge)
        }
        XCTAssertThrowsError(try MessageDeflate.inflate(ByteBuffer(bytes: [0xFF, 0xFF, 0xFF, 0x12]), limit: 1 << 20)) { error in
            XCTAssertEqual(error as? MessageDeflate.InflateFailure, .invalid)
        }
        // The streams are reset after a failure: the next message inflates.
        XCTAssertEqual(try MessageDeflate.inflate(compressed, limit: message.readableBytes), message)
    }

    func testASessionEventIsCompressedOnceForAllItsReaders() throws {
        let session = Session(id: "s", settings: SessionSettings())
        for n in 1...3 {
            _ = try session.append(object: ByteBuffer(string: #"{"type":"step","n":\#(n),"pad":"\#(String(repeating: "x", count: 200))"}"#), type: "step").get()
        }
        let events = session.events(after: 0).events[...]
        let first = session.compressedFrames(events)
        let second = session.compressedFrames(events)
        XCTAssertEqual(first.map(\.rsv1), [true, true, true])
        for (made, shared) in zip(first, second) {
            // The second reader gets the very buffer the first one made, not a compression of its own.
            let madeBase = made.data.withUnsafeReadableBytes { $0.baseAddress }
            let sharedBase = shared.data.withUnsafeReadableBytes { $0.baseAddress }
            XCTAssertEqual(madeBase, sharedBase)
        }
        XCTAssertEqual(try MessageDeflate.inflate(first[1].data, limit: 1 << 20), events[events.startIndex + 1].text)
    }

    // MARK: The frame validator

    private final class Collector: ChannelInboundHandler {
        typealias InboundIn = WebSocketFrame
        var frames: [WebSocketFrame] = []
        var errors: [any Error] = []
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { self.frames.append(self.unwrapInboundIn(data)) }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { self.errors.append(error) }
    }

    private func validator(limit: Int = 1 << 20) throws -> (EmbeddedChannel, Collector) {
        let collector = Collector()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandlers([FrameValidator(maxMessageSize: limit, deflate: true), collector])
        return (channel, collector)
    }

    private func masked(_ opcode: WebSocketOpcode, _ payload: ByteBuffer, fin: Bool = true, rsv1: Bool = false) -> WebSocketFrame {
        let key: WebSocketMaskingKey = [1, 2, 3, 4]
        var data = payload
        data.webSocketMask(key)
        return WebSocketFrame(fin: fin, rsv1: rsv1, opcode: opcode, maskKey: key, data: data)
    }

    func testCompressedFragmentsArriveAsOneInflatedMessageBetweenControlFrames() throws {
        let (channel, collector) = try self.validator()
        let text = String(repeating: "moongate ", count: 500)
        var compressed = try XCTUnwrap(MessageDeflate.compress(ByteBuffer(string: text), windowBits: 15))
        let first = compressed.readSlice(length: compressed.readableBytes / 2)!
        try channel.writeInbound(self.masked(.text, first, fin: false, rsv1: true))
        try channel.writeInbound(self.masked(.ping, ByteBuffer(string: "p")))
        try channel.writeInbound(self.masked(.continuation, compressed))
        try channel.writeInbound(self.masked(.text, ByteBuffer(string: "plain")))
        XCTAssertEqual(collector.frames.map(\.opcode), [.ping, .text, .text])
        XCTAssertEqual(String(buffer: collector.frames[1].data), text)
        XCTAssertFalse(collector.frames[1].rsv1)
        XCTAssertEqual(String(buffer: collector.frames[2].data), "plain")
        XCTAssertTrue(collector.errors.isEmpty)
    }

    func testRSV1OutsideAMessageStartAndADeflateBombAreRefused() throws {
        var (channel, collector) = try self.validator()
        try channel.writeInbound(self.masked(.ping, ByteBuffer(string: "p"), rsv1: true))
        XCTAssertTrue(collector.errors.first is FrameViolation, "\(collector.errors)")

        (channel, collector) = try self.validator()
        let compressed = try XCTUnwrap(MessageDeflate.compress(ByteBuffer(string: "hello"), windowBits: 15))
        try channel.writeInbound(self.masked(.text, compressed, fin: false, rsv1: true))
        try channel.writeInbound(self.masked(.continuation, ByteBuffer(), rsv1: true))
        XCTAssertTrue(collector.errors.first is FrameViolation, "\(collector.errors)")

        (channel, collector) = try self.validator(limit: 64 << 10)
        let bomb = try XCTUnwrap(MessageDeflate.compress(ByteBuffer(repeating: 0x20, count: 4 << 20), windowBits: 15))
        try channel.writeInbound(self.masked(.text, bomb, rsv1: true))
        XCTAssertEqual(collector.errors.first as? MessageDeflate.InflateFailure, .tooLarge)
        XCTAssertEqual(InboundFailure(collector.errors.first!, maxMessageSize: 64 << 10), .messageTooLarge(limit: 64 << 10))
        XCTAssertTrue(collector.frames.isEmpty)
    }

    func testWithoutNegotiationRSV1IsAProtocolError() throws {
        let collector = Collector()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandlers([FrameValidator(maxMessageSize: 1 << 20), collector])
        let compressed = try XCTUnwrap(MessageDeflate.compress(ByteBuffer(string: "hello"), windowBits: 15))
        try channel.writeInbound(self.masked(.text, compressed, rsv1: true))
        XCTAssertEqual(InboundFailure(collector.errors.first!, maxMessageSize: 1 << 20)?.closeFrame.code, .protocolError)
    }
}
