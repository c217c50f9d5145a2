import NIOCore
import NIOWebSocket
import XCTest

/// Closing handshakes from either side, abrupt disconnects, and shutdown.
final class ClosingTests: HostTestCase {
    /// Connects to /chat and consumes the welcome.
    private func join(_ host: TestHost, autoCloseReply: Bool = true) async throws -> TestWebSocketClient {
        let client = try await host.connect("/chat", autoCloseReply: autoCloseReply)
        let welcome = try await client.nextJSON()
        XCTAssertEqual(welcome["type"] as? String, "welcome")
        return client
    }

    // The welcome tells a client it has joined the endpoint's broadcast set (the 101 response goes
    // out slightly before that), so tests that expect broadcasts wait for it first.
    private static let chatScript = """
        endpoint {
          path = "/chat",
          initial = { type = "welcome" },
          on = {
            say = function(conn, msg) broadcast({ type = "said", text = msg.text }) end,
            bye = function(conn, msg) conn:close(4001, "bye") end,
            sendthenbye = function(conn, msg)
              conn:send({ type = "last words" })
              conn:close(4002, "after send")
            end,
          },
          on_close = function(conn, code)
            broadcast({ type = "left", conn = conn.id, code = code or "none" })
          end,
        }
        """

    func testClientClose1000IsAnsweredWith1000() async throws {
        let host = try await self.startHost(["chat.lua": Self.chatScript])
        let client = try await self.join(host)
        try await client.close(code: 1000)
        let code = try await client.nextClose()
        XCTAssertEqual(code, 1000)
        try await client.waitForDisconnect()
        await assertEventually("connection count did not drop to 0") { host.connectionCount == 0 }
    }

    func testClientCloseCodeIsPassedToOnClose() async throws {
        let host = try await self.startHost(["chat.lua": Self.chatScript])
        let leaving = try await self.join(host)
        let watching = try await self.join(host)
        try await leaving.close(code: 4321)
        let code = try await leaving.nextClose()
        XCTAssertEqual(code, 4321, "a valid application code is echoed back")
        let left = try await watching.nextJSON()
        XCTAssertEqual(left["type"] as? String, "left")
        XCTAssertEqual(left["code"] as? Int, 4321)
    }

    func testInvalidClientCloseCodeIsAnsweredWith1002() async throws {
        let host = try await self.startHost(["chat.lua": Self.chatScript])
        let client = try await self.join(host)
        try await client.close(code: 1005)  // reserved: must never appear on the wire
        let code = try await client.nextClose()
        XCTAssertEqual(code, 1002)
    }

    func testConnCloseReachesTheClientWithItsCodeAndReason() async throws {
        let host = try await self.startHost(["chat.lua": Self.chatScript])
        let client = try await self.join(host)
        try await client.send(text: #"{"type":"bye"}"#)
        let code = try await client.nextClose()
        XCTAssertEqual(code, 4001)
        XCTAssertEqual(client.lastCloseReason, "bye")
        try await client.waitForDisconnect()
        await assertEventually("connection count did not drop to 0") { host.connectionCount == 0 }
    }

    func testConnSendBeforeConnCloseArrivesBeforeTheCloseFrame() async throws {
        let host = try await self.startHost(["chat.lua": Self.chatScript])
        let client = try await self.join(host)
        try await client.send(text: #"{"type":"sendthenbye"}"#)
        let last = try await client.nextJSON()
        XCTAssertEqual(last["type"] as? String, "last words")
        let code = try await client.nextClose()
        XCTAssertEqual(code, 4002)
    }

    func testClientWhoseCloseFrameIsOutGetsNoLaterBroadcast() async throws {
        let host = try await self.startHost(["chat.lua": Self.chatScript])
        // A does not answer the close frame, so the host holds it open in its closing state.
        let a = try await self.join(host, autoCloseReply: false)
        let b = try await self.join(host)
        try await a.send(text: #"{"type":"bye"}"#)
        let code = try await a.nextClose()
        XCTAssertEqual(code, 4001)

        try await b.send(text: #"{"type":"say","text":"after the close"}"#)
        let said = try await b.nextJSON()
        XCTAssertEqual(said["text"] as? String, "after the close")
        // Until the host gives up waiting and drops A, A sees no frame after the close frame.
        let afterClose = try await a.waitForDisconnect()
        XCTAssertEqual(afterClose, [])
    }

    func testAbruptDisconnectIsRemovedFromBroadcastsAndOthersKeepReceiving() async throws {
        let host = try await self.startHost(["chat.lua": Self.chatScript])
        let a = try await self.join(host)
        let b = try await self.join(host)
        let c = try await self.join(host)
        await assertEventually { host.connectionCount == 3 }

        // B vanishes without a close frame.
        await b.disconnect()
        await assertEventually("the dropped client was not unregistered") { host.connectionCount == 2 }

        // on_close ran for B with no code (1006 is never passed as a number).
        let leftForA = try await a.nextJSON()
        XCTAssertEqual(leftForA["type"] as? String, "left")
        XCTAssertEqual(leftForA["code"] as? String, "none")
        let leftForC = try await c.nextJSON()
        XCTAssertEqual(leftForC["type"] as? String, "left")

        // Broadcasts still reach everyone who is left, and nothing breaks on B's dead socket.
        for round in 1...3 {
            try await a.send(text: #"{"type":"say","text":"round \#(round)"}"#)
            for client in [a, c] {
                let said = try await client.nextJSON()
                XCTAssertEqual(said["type"] as? String, "said")
                XCTAssertEqual(said["text"] as? String, "round \(round)")
                // The sender also gets the default ack for its own message.
                if client === a {
                    let ack = try await a.nextJSON()
                    XCTAssertEqual(ack["type"] as? String, "ack")
                }
            }
        }
        XCTAssertEqual(host.connectionCount, 2)
    }

    func testShutdownClosesConnectedClientsWith1001() async throws {
        let host = try await self.startHost(["chat.lua": Self.chatScript])
        let a = try await self.join(host)
        let b = try await self.join(host)
        await assertEventually { host.connectionCount == 2 }

        let shutdown = Task { await host.stopServer() }
        let codeA = try await a.nextClose()
        XCTAssertEqual(codeA, 1001)
        let codeB = try await b.nextClose()
        XCTAssertEqual(codeB, 1001)
        try await a.waitForDisconnect()
        try await b.waitForDisconnect()
        try await withTimeout(5, "shutdown") { await shutdown.value }
        XCTAssertEqual(host.connectionCount, 0)

        // Nothing listens any more.
        do {
            _ = try await TestWebSocketClient.connect(port: host.port, path: "/chat", timeout: 2)
            XCTFail("connected after shutdown")
        } catch {}
    }

    func testShutdownClosesClientsThatNeverAnswerWithinTheGrace() async throws {
        let host = try await self.startHost(["chat.lua": Self.chatScript])
        // A client that never completes the closing handshake.
        let client = try await self.join(host, autoCloseReply: false)
        await assertEventually { host.connectionCount == 1 }
        let started = NIODeadline.now()
        try await withTimeout(10, "shutdown") { await host.stopServer() }
        let elapsed = Double((NIODeadline.now() - started).nanoseconds) / 1e9
        // It gets close 1001, and shutdown gives up on it after the 1 s grace, not never.
        let code = try await client.nextClose()
        XCTAssertEqual(code, 1001)
        try await client.waitForDisconnect()
        XCTAssertGreaterThan(elapsed, 0.9, "shutdown waited for the grace period")
        XCTAssertLessThan(elapsed, 4)
        XCTAssertEqual(host.connectionCount, 0)
    }
}
