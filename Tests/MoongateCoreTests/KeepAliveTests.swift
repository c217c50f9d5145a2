import NIOCore
import XCTest

/// Server pings, client pings, and what happens to clients that stay silent or stop answering.
final class KeepAliveTests: HostTestCase {
    private static let tickerScript = """
        local n = 0
        every(0.1, function()
          n = n + 1
          broadcast({ type = "tick", n = n })
        end)
        endpoint {
          path = "/ticker",
          keepalive = { ping_every = 0.2, timeout = 0.3 },
        }
        """

    func testSilentClientStaysConnectedAndReceivesBroadcasts() async throws {
        let host = try await self.startHost(["ticker.lua": Self.tickerScript])
        let client = try await host.connect("/ticker")

        // Never send a message: only the automatic pong answers. Stay through five ping intervals.
        var pings = 0
        var ticks: [Int] = []
        let deadline = Deadline(seconds: 10)
        while pings < 5 {
            let event = try await client.next(timeout: deadline.remaining)
            switch event {
            case .ping:
                pings += 1
            case .text(let text):
                let message = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
                XCTAssertEqual(message["type"] as? String, "tick")
                ticks.append(try XCTUnwrap(message["n"] as? Int))
            default:
                XCTFail("a silent client was closed or sent something unexpected: \(event)")
                return
            }
        }
        XCTAssertGreaterThanOrEqual(ticks.count, 3, "broadcasts kept arriving between pings")
        XCTAssertEqual(ticks, ticks.sorted(), "ticks arrive in order")
        XCTAssertEqual(Set(ticks).count, ticks.count, "no tick arrives twice")

        // And it still receives broadcasts after all those intervals.
        let later = try await client.nextJSON()
        XCTAssertEqual(later["type"] as? String, "tick")
        XCTAssertGreaterThan(try XCTUnwrap(later["n"] as? Int), try XCTUnwrap(ticks.last))
        XCTAssertEqual(host.connectionCount, 1)
    }

    func testServerPingsEveryPingInterval() async throws {
        let host = try await self.startHost([
            "a.lua": #"endpoint { path = "/p", keepalive = { ping_every = 0.2, timeout = 5 } }"#,
        ])
        let client = try await host.connect("/p")
        let started = NIODeadline.now()
        for _ in 0..<3 {
            let event = try await client.next(timeout: 2)
            XCTAssertEqual(event, .ping)
        }
        // Three pings at 0.2 s intervals: at least ~0.6 s, and clearly not the 20 s default.
        let elapsed = Double((NIODeadline.now() - started).nanoseconds) / 1e9
        XCTAssertGreaterThan(elapsed, 0.45)
        XCTAssertLessThan(elapsed, 5)
    }

    /// Every client of a loop shares one keep-alive timer: each is still pinged on its own
    /// schedule, and clients that leave take nothing of the others' with them.
    func testEachOfManyClientsIsPingedAndLeavingClientsDoNotStopTheRest() async throws {
        let host = try await self.startHost([
            "a.lua": #"endpoint { path = "/p", keepalive = { ping_every = 0.2, timeout = 5 } }"#,
        ])
        var clients: [TestWebSocketClient] = []
        for _ in 0..<12 {
            clients.append(try await host.connect("/p"))
        }
        for client in clients {
            let event = try await client.next(timeout: 3)
            XCTAssertEqual(event, .ping)
        }
        for client in clients[..<6] {
            try await client.close()
        }
        await assertEventually("the closed clients left") { host.connectionCount == 6 }
        for client in clients[6...] {
            for _ in 0..<2 {
                let event = try await client.next(timeout: 3)
                XCTAssertEqual(event, .ping)
            }
        }
        XCTAssertEqual(host.connectionCount, 6)
    }

    func testPingsAreOffWhenPingEveryIsZero() async throws {
        let host = try await self.startHost([
            "a.lua": """
            endpoint {
              path = "/nopings",
              keepalive = { ping_every = 0 },
              on = { marker = function() return { type = "marker" } end },
            }
            """,
        ])
        let client = try await host.connect("/nopings", autoPong: false)
        // For a second (several default-test ping intervals) nothing arrives, and the client, which
        // never answers pings, is not dropped either.
        var events: [TestWebSocketClient.Event] = []
        let deadline = Deadline(seconds: 1)
        while !deadline.hasPassed {
            do {
                events.append(try await client.next(timeout: deadline.remaining))
            } catch TestClientError.timeout {
                break
            }
        }
        XCTAssertEqual(events, [])
        try await client.send(text: #"{"type":"marker"}"#)
        let reply = try await client.nextJSON()
        XCTAssertEqual(reply["type"] as? String, "marker")
    }

    func testClientPingIsAnsweredWithPong() async throws {
        let host = try await self.startHost([
            "a.lua": #"endpoint { path = "/p", keepalive = { ping_every = 0 } }"#,
        ])
        let client = try await host.connect("/p")
        try await client.ping("payload")
        let event = try await client.next(timeout: 2)
        XCTAssertEqual(event, .pong)

        // And again: pongs are not one-off.
        try await client.ping("again")
        let again = try await client.next(timeout: 2)
        XCTAssertEqual(again, .pong)
    }

    func testClientThatDoesNotAnswerPingsIsClosedAndCountDrops() async throws {
        let host = try await self.startHost([
            "a.lua": #"endpoint { path = "/p", keepalive = { ping_every = 0.2, timeout = 0.3 } }"#,
        ])
        let healthy = try await host.connect("/p")
        let dead = try await host.connect("/p", autoPong: false)
        await assertEventually { host.connectionCount == 2 }

        let started = NIODeadline.now()
        let seen = try await dead.waitForDisconnect(timeout: 5)
        let elapsed = Double((NIODeadline.now() - started).nanoseconds) / 1e9
        XCTAssertTrue(seen.contains(.ping), "the server pinged before giving up: \(seen)")
        // ping_every + timeout = 0.5 s; allow generous scheduling slack but far below "never".
        XCTAssertLessThan(elapsed, 0.5 + 1.5, "closed within ping_every + timeout")

        await assertEventually("connection count did not drop to 1") { host.connectionCount == 1 }

        // The client that answers its pings is still served.
        var healthyPings = 0
        while healthyPings < 2 {
            let event = try await healthy.next(timeout: 2)
            XCTAssertEqual(event, .ping)
            healthyPings += 1
        }
        XCTAssertEqual(host.connectionCount, 1)
    }

    func testHeartbeatMessageReachesEveryClientEachInterval() async throws {
        let host = try await self.startHost([
            "a.lua": """
            local beats = 0
            endpoint {
              path = "/hb",
              keepalive = { ping_every = 0 },
              heartbeat = { every = 0.1, message = function() beats = beats + 1; return { type = "beat", n = beats } end },
            }
            endpoint { path = "/hb-default", keepalive = { ping_every = 0 }, heartbeat = { every = 0.1 } }
            """,
        ])
        let a = try await host.connect("/hb")
        let b = try await host.connect("/hb")
        var seenByA: [Int] = []
        while seenByA.count < 3 {
            let beat = try await a.nextJSON()
            XCTAssertEqual(beat["type"] as? String, "beat")
            seenByA.append(try XCTUnwrap(beat["n"] as? Int))
        }
        XCTAssertEqual(seenByA, seenByA.sorted())
        XCTAssertEqual(Set(seenByA).count, 3, "one message per interval")
        let beatForB = try await b.nextJSON()
        XCTAssertEqual(beatForB["type"] as? String, "beat")

        let plain = try await host.connect("/hb-default")
        let text = try await plain.nextText()
        XCTAssertEqual(text, #"{"type":"heartbeat"}"#)
    }
}
