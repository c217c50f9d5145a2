import XCTest

/// How JSON messages are answered: handler replies, default acks, errors.
final class MessageReplyTests: HostTestCase {
    private static let script = """
        endpoint {
          path = "/jobs",
          on = {
            start = function(conn, msg) return { type = "started", job = msg.job, id = msg.id } end,
            quiet = function(conn, msg) end,
            silent = function(conn, msg) return false end,
            explode = function(conn, msg) error("kaboom") end,
            index_nil = function(conn, msg) return msg.nothing.here end,
            raw = function(conn, msg, text) return { type = "raw", text = text } end,
          },
        }
        endpoint {
          path = "/star",
          on = {
            known = function(conn, msg) return { type = "known" } end,
            ["*"] = function(conn, msg) return { type = "star", got = msg.type } end,
          },
        }
        """

    private func jobs() async throws -> (TestHost, TestWebSocketClient) {
        let host = try await self.startHost(["jobs.lua": Self.script])
        return (host, try await host.connect("/jobs"))
    }

    func testHandlerReplyTableIsSentAsJSON() async throws {
        let (_, client) = try await self.jobs()
        try await client.send(text: #"{"type":"start","job":"build","id":"r1"}"#)
        let reply = try await client.nextJSON()
        XCTAssertEqual(reply["type"] as? String, "started")
        XCTAssertEqual(reply["job"] as? String, "build")
        XCTAssertEqual(reply["id"] as? String, "r1")
    }

    func testAResumeMessageOutsideSessionEndpointsIsAnOrdinaryMessage() async throws {
        let (_, client) = try await self.jobs()
        try await client.send(text: #"{"type":"resume","last_seq":3,"id":9}"#)
        let text = try await client.nextText()
        XCTAssertEqual(text, #"{"type":"ack","received":true,"id":9}"#)
    }

    func testHandlerReturningNothingGetsDefaultAckWithStringId() async throws {
        let (_, client) = try await self.jobs()
        try await client.send(text: #"{"type":"quiet","id":"abc-1"}"#)
        let text = try await client.nextText()
        XCTAssertEqual(text, #"{"type":"ack","received":true,"id":"abc-1"}"#)
    }

    func testDefaultAckCopiesNumberId() async throws {
        let (_, client) = try await self.jobs()
        try await client.send(text: #"{"type":"quiet","id":42}"#)
        let text = try await client.nextText()
        XCTAssertEqual(text, #"{"type":"ack","received":true,"id":42}"#)
    }

    func testDefaultAckCopiesLargeAndStructuredIdsExactly() async throws {
        let (_, client) = try await self.jobs()
        // 20 digits: a trip through a Lua number would round this.
        try await client.send(text: #"{"type":"quiet","id":12345678901234567890}"#)
        let large = try await client.nextText()
        XCTAssertEqual(large, #"{"type":"ack","received":true,"id":12345678901234567890}"#)

        try await client.send(text: #"{"type":"nobody-handles-this","id":1.50}"#)
        let decimal = try await client.nextText()
        XCTAssertEqual(decimal, #"{"type":"ack","received":true,"id":1.50}"#)

        try await client.send(text: #"{"id":{"seq":[1,2]},"type":"quiet"}"#)
        let structured = try await client.nextJSON()
        XCTAssertEqual(structured["type"] as? String, "ack")
        let id = try XCTUnwrap(structured["id"] as? [String: Any])
        XCTAssertEqual(id["seq"] as? [Int], [1, 2])
    }

    func testMessageWithoutIdIsAckedWithoutId() async throws {
        let (_, client) = try await self.jobs()
        try await client.send(text: #"{"type":"quiet"}"#)
        let text = try await client.nextText()
        XCTAssertEqual(text, #"{"type":"ack","received":true}"#)
    }

    func testUnknownTypesAndMissingTypeAreAcked() async throws {
        let (_, client) = try await self.jobs()
        try await client.send(text: #"{"type":"no-such-handler","id":"u1"}"#)
        let unknown = try await client.nextText()
        XCTAssertEqual(unknown, #"{"type":"ack","received":true,"id":"u1"}"#)

        try await client.send(text: #"{"id":7,"payload":true}"#)
        let typeless = try await client.nextText()
        XCTAssertEqual(typeless, #"{"type":"ack","received":true,"id":7}"#)
    }

    func testHandlerReturningFalseSendsNoReply() async throws {
        let (_, client) = try await self.jobs()
        try await client.send(text: #"{"type":"silent","id":"s1"}"#)
        try await client.send(text: #"{"type":"quiet","id":"after"}"#)
        // The first answer to arrive is the one for the second message.
        let reply = try await client.nextJSON()
        XCTAssertEqual(reply["id"] as? String, "after")
    }

    func testHandlerReceivesTheRawTextAsThirdArgument() async throws {
        let (_, client) = try await self.jobs()
        let text = #"{"type":"raw", "n": 1}"#
        try await client.send(text: text)
        let reply = try await client.nextJSON()
        XCTAssertEqual(reply["text"] as? String, text)
    }

    func testCatchAllHandlerTakesTypesWithoutTheirOwnHandler() async throws {
        let host = try await self.startHost(["jobs.lua": Self.script])
        let client = try await host.connect("/star")
        try await client.send(text: #"{"type":"known"}"#)
        let known = try await client.nextJSON()
        XCTAssertEqual(known["type"] as? String, "known")

        try await client.send(text: #"{"type":"whatever","id":1}"#)
        let star = try await client.nextJSON()
        XCTAssertEqual(star["type"] as? String, "star")
        XCTAssertEqual(star["got"] as? String, "whatever")

        // Even a message without a type goes to "*" rather than getting the default ack.
        try await client.send(text: #"{"id":2}"#)
        let typeless = try await client.nextJSON()
        XCTAssertEqual(typeless["type"] as? String, "star")
        XCTAssertNil(typeless["got"] as? String)
    }

    func testMalformedJSONGetsAnErrorAndTheConnectionStaysOpen() async throws {
        let (host, client) = try await self.jobs()
        try await client.send(text: #"{"type":"start","#)
        let error = try await client.nextJSON()
        XCTAssertEqual(error["type"] as? String, "error")
        let message = try XCTUnwrap(error["error"] as? String)
        XCTAssertTrue(message.hasPrefix("invalid JSON: "), message)

        try await client.send(text: "not json at all")
        let again = try await client.nextJSON()
        XCTAssertEqual(again["type"] as? String, "error")

        // Still open and served.
        try await client.send(text: #"{"type":"start","job":"j","id":"ok"}"#)
        let reply = try await client.nextJSON()
        XCTAssertEqual(reply["type"] as? String, "started")
        XCTAssertEqual(host.connectionCount, 1)
    }

    func testJSONThatIsNotAnObjectGetsAnError() async throws {
        let (_, client) = try await self.jobs()
        for text in ["[1,2,3]", "42", #""a string""#, "[]"] {
            try await client.send(text: text)
            let error = try await client.nextJSON()
            XCTAssertEqual(error["type"] as? String, "error", text)
            XCTAssertEqual(error["error"] as? String, #"expected a JSON object with a "type" field"#, text)
        }
    }

    func testLuaErrorInHandlerRepliesToThatClientOnlyWithItsId() async throws {
        let (host, failing) = try await self.jobs()
        let bystander = try await host.connect("/jobs")

        try await failing.send(text: #"{"type":"explode","id":"boom-1"}"#)
        let error = try await failing.nextText()
        XCTAssertEqual(error, #"{"type":"error","error":"handler failed","id":"boom-1"}"#)

        try await failing.send(text: #"{"type":"index_nil","id":99}"#)
        let second = try await failing.nextText()
        XCTAssertEqual(second, #"{"type":"error","error":"handler failed","id":99}"#)

        // The bystander got nothing: its first message is the answer to its own request.
        try await bystander.send(text: #"{"type":"start","job":"b","id":"b1"}"#)
        let reply = try await bystander.nextJSON()
        XCTAssertEqual(reply["type"] as? String, "started")
        XCTAssertEqual(reply["id"] as? String, "b1")

        // The failing client is still connected and served; the error was logged with its line.
        try await failing.send(text: #"{"type":"start","job":"again","id":"f2"}"#)
        let recovered = try await failing.nextJSON()
        XCTAssertEqual(recovered["id"] as? String, "f2")
        XCTAssertTrue(host.logs.contains("scripts/jobs.lua:7: kaboom"), host.logs.all.joined(separator: "\n"))
    }

    func testErrorWithoutIdHasNoIdField() async throws {
        let (_, client) = try await self.jobs()
        try await client.send(text: #"{"type":"explode"}"#)
        let error = try await client.nextText()
        XCTAssertEqual(error, #"{"type":"error","error":"handler failed"}"#)
    }
}
