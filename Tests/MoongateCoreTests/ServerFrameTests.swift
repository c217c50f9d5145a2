import NIOCore
import NIOEmbedded
import NIOWebSocket
import XCTest

@testable import MoongateCore

/// NIO's frame encoder is the reference: a frame written as one buffer must be the same bytes.
final class ServerFrameTests: XCTestCase {
    private func nioBytes(_ frame: WebSocketFrame) throws -> [UInt8] {
        let channel = EmbeddedChannel(handler: WebSocketFrameEncoder())
        defer { _ = try? channel.finish() }
        try channel.writeOutbound(frame)
        var bytes: [UInt8] = []
        while let part = try channel.readOutbound(as: ByteBuffer.self) {
            bytes += part.readableBytesView
        }
        return bytes
    }

    func testMatchesNIOsEncoderAtEveryLengthBoundary() throws {
        for length in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload = ByteBuffer(bytes: (0..<length).map { UInt8(truncatingIfNeeded: $0 * 7) })
            for opcode in [WebSocketOpcode.text, .binary, .ping, .connectionClose] where length <= 125 || opcode == .text || opcode == .binary {
                for rsv1 in [false, true] {
                    let expected = try self.nioBytes(WebSocketFrame(fin: true, rsv1: rsv1, opcode: opcode, data: payload))
                    let copied = ServerFrame.encode(opcode, payload: payload, rsv1: rsv1)
                    XCTAssertEqual(Array(copied.readableBytesView), expected, "\(opcode) \(length) rsv1 \(rsv1), copied")

                    var framable = ByteBuffer.framable(capacity: length)
                    framable.writeImmutableBuffer(payload)
                    let inPlace = ServerFrame.encode(opcode, payload: framable, rsv1: rsv1)
                    XCTAssertEqual(Array(inPlace.readableBytesView), expected, "\(opcode) \(length) rsv1 \(rsv1), in place")

                    var split = ServerFrame.header(opcode, rsv1: rsv1, payloadLength: length, allocator: ByteBufferAllocator())
                    split.writeImmutableBuffer(payload)
                    XCTAssertEqual(Array(split.readableBytesView), expected, "\(opcode) \(length) rsv1 \(rsv1), header apart")
                }
            }
        }
    }

    func testFramingInPlaceLeavesAnotherHolderOfTheBytesAlone() {
        var message = ByteBuffer.framable(capacity: 5)
        message.setBytes(Array(repeating: 9, count: ServerFrame.headroom), at: 0)
        message.writeString("hello")
        let other = message
        let framed = ServerFrame.encode(.text, payload: message)
        XCTAssertEqual(Array(framed.readableBytesView), [0x81, 5] + Array("hello".utf8))
        var whole = other
        whole.moveReaderIndex(to: 0)
        XCTAssertEqual(Array(whole.readableBytesView), Array(repeating: 9, count: ServerFrame.headroom) + Array("hello".utf8))
    }
}
