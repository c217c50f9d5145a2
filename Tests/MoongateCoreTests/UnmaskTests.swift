import NIOCore
import NIOWebSocket
import XCTest

@testable import MoongateCore

final class UnmaskTests: XCTestCase {
    /// NIO's own unmasking is the reference, for every length around the eight-byte steps.
    func testMatchesNIOForEveryLengthAndKey() {
        var generator = SystemRandomNumberGenerator()
        for length in 0..<70 {
            let key = WebSocketMaskingKey.random(using: &generator)
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            var ours = ByteBuffer(bytes: bytes)
            var theirs = ByteBuffer(bytes: bytes)
            ours.unmaskWebSocketPayload(key)
            theirs.webSocketUnmask(key)
            XCTAssertEqual(ours, theirs, "length \(length)")
        }
    }

    func testASliceIsUnmaskedFromItsOwnStartWithoutTouchingTheParent() {
        let key: WebSocketMaskingKey = [1, 2, 3, 4]
        let parent = ByteBuffer(bytes: Array(repeating: 0, count: 40))
        var slice = parent.getSlice(at: 3, length: 20)!
        slice.unmaskWebSocketPayload(key)
        XCTAssertEqual(Array(slice.readableBytesView.prefix(5)), [1, 2, 3, 4, 1])
        XCTAssertEqual(parent, ByteBuffer(bytes: Array(repeating: 0, count: 40)))
    }
}
