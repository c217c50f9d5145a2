import XCTest

/// broadcast and publish: who receives what.
final class FanoutTests: HostTestCase {
    private static let rooms = """
        endpoint {
          path = "/news",
          initial = { type = "welcome" },
          on = {
            shout = function(conn, msg) broadcast({ type = "news", text = msg.text }) end,
            tell = function(conn, msg)
              local reached = publish(msg.path, { type = "told", text = msg.text })
              return { type = "published", reached = reached }
            end,
            tell_two = function(conn, msg)
              publish(msg.first, { type = "told", text = "first" })
              publish(msg.second, { type = "told", text = "second" })
            end,
          },
        }
        endpoint { path = "/rooms/:room", initial = function(conn) return { type = "joined", room = conn.params.room } end }
        """

    /// Connects to /news and consumes the welcome, after which the client is in the broadcast set.
    private func news(_ host: TestHost) async throws -> TestWebSocketClient {
        let client = try await host.connect("/news")
        let welcome = try await client.nextJSON()
        XCTAssertEqual(welcome["type"] as? String, "welcome")
        return client
    }

    private static let other = """
        endpoint { path = "/other", initial = { type = "ready" } }
        """

    func testBroadcastReachesAllClientsOfTheEndpointOnly() async throws {
        let host = try await self.startHost(["rooms.lua": Self.rooms, "other.lua": Self.other])
        let clients = try await [self.news(host), self.news(host), self.news(host)]
        let outsider = try await host.connect("/other")
        _ = try await outsider.nextJSON()  // its initial

        try await clients[0].send(text: #"{"type":"shout","text":"extra!","id":1}"#)
        for (index, client) in clients.enumerated() {
            let news = try await client.nextJSON()
            XCTAssertEqual(news["type"] as? String, "news", "client \(index)")
            XCTAssertEqual(news["text"] as? String, "extra!")
        }
        let ack = try await clients[0].nextJSON()
        XCTAssertEqual(ack["type"] as? String, "ack")

        // The other endpoint's client got nothing: its next message is the one published to it.
        try await clients[1].send(text: #"{"type":"tell","path":"/other","text":"for other"}"#)
        let told = try await outsider.nextJSON()
        XCTAssertEqual(told["type"] as? String, "told")
        XCTAssertEqual(told["text"] as? String, "for other")
    }

    func testEveryBroadcastReachesExactlyTheCurrentMembersAsTheyComeAndGo() async throws {
        let host = try await self.startHost(["rooms.lua": Self.rooms])
        var members: [TestWebSocketClient] = []
        for _ in 0..<6 {
            members.append(try await self.news(host))
        }
        // Leave from the front, the middle and the back, cleanly and abruptly.
        let leaving = [members[0], members[3], members[5]]
        try await leaving[0].close()
        _ = try await leaving[0].nextClose()
        await leaving[1].disconnect()
        try await leaving[2].close()
        _ = try await leaving[2].nextClose()
        await assertEventually { host.connectionCount == 3 }
        members = [members[1], members[2], members[4]]
        members.append(try await self.news(host))
        members.append(try await self.news(host))

        for round in 1...2 {
            try await members[0].send(text: #"{"type":"shout","text":"round \#(round)"}"#)
            for (index, member) in members.enumerated() {
                let news = try await member.nextJSON()
                XCTAssertEqual(news["text"] as? String, "round \(round)", "member \(index): each broadcast once, in order")
            }
            let ack = try await members[0].nextJSON()
            XCTAssertEqual(ack["type"] as? String, "ack")
        }
    }

    func testPublishReachesAnotherEndpointOfAnotherScript() async throws {
        let host = try await self.startHost(["rooms.lua": Self.rooms, "other.lua": Self.other])
        let publisher = try await self.news(host)
        let a = try await host.connect("/other")
        let b = try await host.connect("/other")
        for client in [a, b] {
            let ready = try await client.nextJSON()
            XCTAssertEqual(ready["type"] as? String, "ready")
        }
        try await publisher.send(text: #"{"type":"tell","path":"/other","text":"hi other"}"#)
        let result = try await publisher.nextJSON()
        XCTAssertEqual(result["reached"] as? Int, 1, "publish returns the number of endpoints reached")
        for client in [a, b] {
            let told = try await client.nextJSON()
            XCTAssertEqual(told["text"] as? String, "hi other")
        }
    }

    func testPublishToAPatternReachesEveryClientOfThatEndpoint() async throws {
        let host = try await self.startHost(["rooms.lua": Self.rooms])
        let publisher = try await self.news(host)
        let red = try await host.connect("/rooms/red")
        let blue = try await host.connect("/rooms/blue")
        _ = try await red.nextJSON()
        _ = try await blue.nextJSON()
        try await publisher.send(text: #"{"type":"tell","path":"/rooms/:room","text":"everyone"}"#)
        for client in [red, blue] {
            let told = try await client.nextJSON()
            XCTAssertEqual(told["text"] as? String, "everyone")
        }
    }

    func testPublishToAConcretePathReachesOnlyThatPathsClients() async throws {
        let host = try await self.startHost(["rooms.lua": Self.rooms])
        let publisher = try await self.news(host)
        let red1 = try await host.connect("/rooms/red")
        let red2 = try await host.connect("/rooms/red")
        let blue = try await host.connect("/rooms/blue")
        for client in [red1, red2, blue] {
            let joined = try await client.nextJSON()
            XCTAssertEqual(joined["type"] as? String, "joined")
        }
        // One handler publishes to /rooms/red, then to /rooms/blue; a later one to the whole
        // endpoint. Each client's two messages show exactly what it was sent, in order.
        try await publisher.send(text: #"{"type":"tell_two","first":"/rooms/red","second":"/rooms/blue"}"#)
        try await publisher.send(text: #"{"type":"tell","path":"/rooms/:room","text":"everyone"}"#)
        for client in [red1, red2] {
            let first = try await client.nextJSON()
            XCTAssertEqual(first["text"] as? String, "first")
            let next = try await client.nextJSON()
            XCTAssertEqual(next["text"] as? String, "everyone", "a red client got a message meant for blue")
        }
        let toBlue = try await blue.nextJSON()
        XCTAssertEqual(toBlue["text"] as? String, "second", "blue got a message meant for red")
        let everyone = try await blue.nextJSON()
        XCTAssertEqual(everyone["text"] as? String, "everyone")
    }

    func testPublishToAnUnknownPathReachesNothing() async throws {
        let host = try await self.startHost(["rooms.lua": Self.rooms])
        let publisher = try await self.news(host)
        try await publisher.send(text: #"{"type":"tell","path":"/nowhere","text":"lost"}"#)
        let result = try await publisher.nextJSON()
        XCTAssertEqual(result["type"] as? String, "published")
        XCTAssertEqual(result["reached"] as? Int, 0)
    }
}
