import NIOCore
import NIOWebSocket
import XCTest

/// Raw text and binary handlers, and the frames RFC 6455 makes the server refuse.
final class ProtocolTests: HostTestCase {
    private static let script = """
        endpoint {
          path = "/echo",
          on_text = function(conn, text) return text end,
          on_binary = function(conn, data) return data end,
        }
        endpoint {
          path = "/small",
          max_message_size = 64,
          on_text = function(conn, text) return "got " .. #text end,
        }
        endpoint { path = "/json-only", on = { x = function() end } }
        endpoint {
          path = "/mixed",
          on = { hello = function() return { type = "hello back" } end },
          on_text = function(conn, text) return "raw: " .. text end,
        }
        """

    func testOnTextEchoesTextUnchanged() async throws {
        let host = try await self.startHost(["a.lua": Self.script])
        let client = try await host.connect("/echo")
        for text in ["hello", "", "ünïcödé ✓ 🌙", #"{"type":"not parsed"}"#, String(repeating: "x", count: 70_000)] {
            try await client.send(text: text)
            let echoed = try await client.nextText()
            XCTAssertEqual(echoed, text)
        }
    }

    func testOnBinaryEchoesBytesAsBinary() async throws {
        let host = try await self.startHost(["a.lua": Self.script])
        let client = try await host.connect("/echo")
        let bytes: [UInt8] = [0, 1, 2, 255, 254, 0x80, 0xC3, 0x28]
        try await client.send(binary: bytes)
        let event = try await client.next()
        XCTAssertEqual(event, .binary(bytes))
    }

    func testBinaryToAnEndpointWithoutOnBinaryGetsAnError() async throws {
        let host = try await self.startHost(["a.lua": Self.script])
        let client = try await host.connect("/json-only")
        try await client.send(binary: [1, 2, 3])
        let error = try await client.nextJSON()
        XCTAssertEqual(error["type"] as? String, "error")
        XCTAssertEqual(error["error"] as? String, "this endpoint does not accept binary messages")
    }

    func testOnTextGetsWhatTheOnTableDoesNotParse() async throws {
        let host = try await self.startHost(["a.lua": Self.script])
        let client = try await host.connect("/mixed")
        try await client.send(text: #"{"type":"hello"}"#)
        let hello = try await client.nextJSON()
        XCTAssertEqual(hello["type"] as? String, "hello back")
        try await client.send(text: "plain words")
        let raw = try await client.nextText()
        XCTAssertEqual(raw, "raw: plain words")
    }

    func testFragmentedTextIsJoinedBeforeTheHandler() async throws {
        let host = try await self.startHost(["a.lua": Self.script])
        let client = try await host.connect("/echo")
        try await client.sendRaw(frame: WebSocketFrame(fin: false, opcode: .text, maskKey: .random(), data: ByteBuffer(string: "frag")))
        try await client.ping("in between")
        try await client.sendRaw(frame: WebSocketFrame(fin: true, opcode: .continuation, maskKey: .random(), data: ByteBuffer(string: "mented")))
        // The control frame may be answered mid-message; the text arrives whole.
        let first = try await client.next()
        XCTAssertEqual(first, .pong)
        let joined = try await client.nextText()
        XCTAssertEqual(joined, "fragmented")
    }

    func testSingleFrameAndFragmentedMessagesAlternateInOrder() async throws {
        let host = try await self.startHost(["a.lua": Self.script])
        let client = try await host.connect("/echo")
        func fragments(_ parts: [String]) async throws {
            for (index, part) in parts.enumerated() {
                let frame = WebSocketFrame(
                    fin: index == parts.count - 1,
                    opcode: index == 0 ? .text : .continuation,
                    maskKey: .random(),
                    data: ByteBuffer(string: part)
                )
                try await client.sendRaw(frame: frame)
            }
        }
        try await client.send(text: "one")
        try await fragments(["t", "w", "o"])
        try await client.send(text: "three")
        try await fragments(["fo", "ur"])
        try await client.send(text: "five")
        for expected in ["one", "two", "three", "four", "five"] {
            let echoed = try await client.nextText()
            XCTAssertEqual(echoed, expected)
        }
    }

    func testInvalidUTF8TextClosesWith1007() async throws {
        let host = try await self.startHost(["a.lua": Self.script])
        let client = try await host.connect("/echo")
        let frame = WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: ByteBuffer(bytes: [0x68, 0x69, 0xC3, 0x28]))
        try await client.sendRaw(frame: frame)
        let code = try await client.nextClose()
        XCTAssertEqual(code, 1007)
        try await client.waitForDisconnect()
        await assertEventually { host.connectionCount == 0 }
    }

    func testInvalidUTF8AcrossFragmentsClosesWith1007() async throws {
        let host = try await self.startHost(["a.lua": Self.script])
        let client = try await host.connect("/echo")
        // A valid two-byte sequence split over two fragments is fine...
        try await client.sendRaw(frame: WebSocketFrame(fin: false, opcode: .text, maskKey: .random(), data: ByteBuffer(bytes: [0x61, 0xC3])))
        try await client.sendRaw(frame: WebSocketFrame(fin: true, opcode: .continuation, maskKey: .random(), data: ByteBuffer(bytes: [0xA9])))
        let joined = try await client.nextText()
        XCTAssertEqual(joined, "aé")
        // ...a truncated one is not.
        try await client.sendRaw(frame: WebSocketFrame(fin: false, opcode: .text, maskKey: .random(), data: ByteBuffer(bytes: [0x61, 0xC3])))
        try await client.sendRaw(frame: WebSocketFrame(fin: true, opcode: .continuation, maskKey: .random(), data: ByteBuffer(bytes: [0x28])))
        let code = try await client.nextClose()
        XCTAssertEqual(code, 1007)
    }

    func testFrameWithRSV1ClosesWith1002() async throws {
        let host = try await self.startHost(["a.lua": Self.script])
        let client = try await host.connect("/echo")
        let frame = WebSocketFrame(fin: true, rsv1: true, opcode: .text, maskKey: .random(), data: ByteBuffer(string: "compressed?"))
        try await client.sendRaw(frame: frame)
        let code = try await client.nextClose()
        XCTAssertEqual(code, 1002)
        try await client.waitForDisconnect()
        await assertEventually { host.connectionCount == 0 }
    }

    func testUnmaskedFrameClosesWith1002() async throws {
        let host = try await self.startHost(["a.lua": Self.script])
        let client = try await host.connect("/echo")
        try await client.sendRaw(frame: WebSocketFrame(fin: true, opcode: .text, maskKey: nil, data: ByteBuffer(string: "bare")))
        let code = try await client.nextClose()
        XCTAssertEqual(code, 1002)
    }

    func testReservedOpcodeClosesWith1002() async throws {
        let host = try await self.startHost(["a.lua": Self.script])
        let client = try await host.connect("/echo")
        let reserved = try XCTUnwrap(WebSocketOpcode(encodedWebSocketOpcode: 0x3))
        try await client.sendRaw(frame: WebSocketFrame(fin: true, opcode: reserved, maskKey: .random(), data: ByteBuffer()))
        let code = try await client.nextClose()
        XCTAssertEqual(code, 1002)
    }

    func testContinuationWithoutStartClosesWith1002() async throws {
        let host = try await self.startHost(["a.lua": Self.script])
        let client = try await host.connect("/echo")
        try await client.sendRaw(frame: WebSocketFrame(fin: true, opcode: .continuation, maskKey: .random(), data: ByteBuffer(string: "orphan")))
        let code = try await client.nextClose()
        XCTAssertEqual(code, 1002)
    }

    func testMessageWithinMaxMessageSizeIsDelivered() async throws {
        let host = try await self.startHost(["a.lua": Self.script])
        let client = try await host.connect("/small")
        try await client.send(text: String(repeating: "a", count: 64))
        let reply = try await client.nextText()
        XCTAssertEqual(reply, "got 64")
    }

    func testSingleFrameLargerThanMaxMessageSizeClosesWith1009() async throws {
        let host = try await self.startHost(["a.lua": Self.script])
        let client = try await host.connect("/small")
        try await client.send(text: String(repeating: "a", count: 65))
        let code = try await client.nextClose()
        XCTAssertEqual(code, 1009)
        try await client.waitForDisconnect()
        await assertEventually { host.connectionCount == 0 }
    }

    func testMaxMessageSizeOfOneEndpointDoesNotLimitAnother() async throws {
        let host = try await self.startHost(["a.lua": Self.script])
        let client = try await host.connect("/echo")
        let text = String(repeating: "z", count: 4096)
        try await client.send(text: text)
        let echoed = try await client.nextText()
        XCTAssertEqual(echoed, text)
    }

    func testFragmentedMessageLargerThanMaxMessageSizeClosesWith1009() async throws {
        let host = try await self.startHost(["a.lua": Self.script])
        let client = try await host.connect("/small")
        let part = String(repeating: "b", count: 40)
        try await client.sendRaw(frame: WebSocketFrame(fin: false, opcode: .text, maskKey: .random(), data: ByteBuffer(string: part)))
        try await client.sendRaw(frame: WebSocketFrame(fin: true, opcode: .continuation, maskKey: .random(), data: ByteBuffer(string: part)))
        let code = try await client.nextClose()
        XCTAssertEqual(code, 1009)
        try await client.waitForDisconnect()
    }

    func testFrameLargerThanServerMaxMessageSizeClosesWith1009() async throws {
        let host = try await self.startHost(["a.lua": Self.script]) { $0.maxMessageSize = 1024 }
        let client = try await host.connect("/echo")
        try await client.send(text: String(repeating: "c", count: 2048))
        let code = try await client.nextClose()
        XCTAssertEqual(code, 1009)
    }
}
