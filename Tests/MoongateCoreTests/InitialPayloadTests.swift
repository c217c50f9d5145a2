import XCTest

/// What a client receives first on connecting, and what Lua sees of the request.
final class InitialPayloadTests: HostTestCase {
    func testInitialFunctionResultIsTheFirstMessage() async throws {
        let host = try await self.startHost([
            "a.lua": """
            local opened = 0
            endpoint {
              path = "/fn",
              initial = function(conn)
                opened = opened + 1
                return { type = "hello", conn = conn.id, opened = opened }
              end,
              on = { echo = function(conn, msg) return { type = "echoed", text = msg.text } end },
            }
            """,
        ])
        let client = try await host.connect("/fn")
        let first = try await client.nextJSON()
        XCTAssertEqual(first["type"] as? String, "hello")
        XCTAssertEqual(first["opened"] as? Int, 1)
        XCTAssertNotNil(first["conn"] as? Int)

        try await client.send(text: #"{"type":"echo","text":"after"}"#)
        let reply = try await client.nextJSON()
        XCTAssertEqual(reply["type"] as? String, "echoed")
        XCTAssertEqual(reply["text"] as? String, "after")

        let second = try await host.connect("/fn")
        let secondFirst = try await second.nextJSON()
        XCTAssertEqual(secondFirst["opened"] as? Int, 2, "initial runs once per connection")
        XCTAssertNotEqual(secondFirst["conn"] as? Int, first["conn"] as? Int)
    }

    func testInitialTableAndStringFormsAreSentVerbatim() async throws {
        let host = try await self.startHost([
            "a.lua": """
            endpoint { path = "/table", initial = { type = "config", version = 3 } }
            endpoint { path = "/string", initial = "plain words" }
            """,
        ])
        let table = try await host.connect("/table")
        let config = try await table.nextJSON()
        XCTAssertEqual(config["type"] as? String, "config")
        XCTAssertEqual(config["version"] as? Int, 3)

        let string = try await host.connect("/string")
        let text = try await string.nextText()
        XCTAssertEqual(text, "plain words")
    }

    func testWatcherSnapshotIsSentWhenThereIsNoInitial() async throws {
        let host = try await self.startHost([
            "a.lua": """
            local polls = 0
            endpoint {
              path = "/status",
              watch = { every = 30, poll = function()
                polls = polls + 1
                return { type = "status", state = "green", polls = polls }
              end },
            }
            """,
        ])
        // The watcher polled once when the script went live; its value is the snapshot.
        let client = try await host.connect("/status")
        let snapshot = try await client.nextJSON()
        XCTAssertEqual(snapshot["type"] as? String, "status")
        XCTAssertEqual(snapshot["state"] as? String, "green")
        XCTAssertEqual(snapshot["polls"] as? Int, 1)

        let another = try await host.connect("/status")
        let again = try await another.nextJSON()
        XCTAssertEqual(again["polls"] as? Int, 1, "a snapshot is the last value, not a new poll")
    }

    func testInitialWinsOverWatcherSnapshot() async throws {
        let host = try await self.startHost([
            "a.lua": """
            endpoint {
              path = "/both",
              initial = { type = "initial" },
              watch = { every = 30, poll = function() return { type = "watched" } end },
            }
            """,
        ])
        let client = try await host.connect("/both")
        let first = try await client.nextJSON()
        XCTAssertEqual(first["type"] as? String, "initial")
    }

    func testTableInitialIsEncodedForEachClientSoItShowsTheStateThen() async throws {
        let host = try await self.startHost([
            "a.lua": """
            local state = { type = "state", count = 0 }
            endpoint {
              path = "/counter",
              initial = state,
              on = { bump = function() state.count = state.count + 1 end },
            }
            """,
        ])
        let first = try await host.connect("/counter")
        let before = try await first.nextJSON()
        XCTAssertEqual(before["count"] as? Int, 0)
        try await first.send(text: #"{"type":"bump"}"#)
        _ = try await first.nextJSON()  // the ack
        let second = try await host.connect("/counter")
        let after = try await second.nextJSON()
        XCTAssertEqual(after["count"] as? Int, 1)
    }

    func testStringInitialComesFromTheScriptServingAtConnectTime() async throws {
        let host = try await self.startHost(["a.lua": #"endpoint { path = "/s", initial = "version 1" }"#])
        let early = try await host.connect("/s")
        let first = try await early.nextText()
        XCTAssertEqual(first, "version 1")
        try host.write(file: "a.lua", source: #"endpoint { path = "/s", initial = "version 2" }"#)
        _ = try await host.reload().get()
        let late = try await host.connect("/s")
        let second = try await late.nextText()
        XCTAssertEqual(second, "version 2")
    }

    func testNoInitialMeansTheFirstMessageIsTheFirstReply() async throws {
        let host = try await self.startHost([
            "a.lua": #"endpoint { path = "/quiet", on = { hi = function() return { type = "hi back" } end } }"#,
        ])
        let client = try await host.connect("/quiet")
        try await client.send(text: #"{"type":"hi"}"#)
        let first = try await client.nextJSON()
        XCTAssertEqual(first["type"] as? String, "hi back")
    }

    func testPathParamsQueryAndHeadersAreVisibleToLua() async throws {
        let host = try await self.startHost([
            "a.lua": """
            endpoint {
              path = "/rooms/:room/users/:user",
              initial = function(conn)
                return {
                  room = conn.params.room,
                  user = conn.params.user,
                  token = conn.query.token,
                  flag = conn.query.flag,
                  spaced = conn.query.q,
                  header = conn.headers["x-test-header"],
                  path = conn.path,
                }
              end,
              on = { whoami = function(conn) return { room = conn.params.room, token = conn.query.token } end },
            }
            """,
        ])
        let client = try await host.connect(
            "/rooms/blue%20room/users/7?token=abc&flag&q=a+b%21",
            headers: ["X-Test-Header": "present"]
        )
        let first = try await client.nextJSON()
        XCTAssertEqual(first["room"] as? String, "blue room")
        XCTAssertEqual(first["user"] as? String, "7")
        XCTAssertEqual(first["token"] as? String, "abc")
        XCTAssertEqual(first["flag"] as? String, "")
        XCTAssertEqual(first["spaced"] as? String, "a b!")
        XCTAssertEqual(first["header"] as? String, "present")
        XCTAssertEqual(first["path"] as? String, "/rooms/blue%20room/users/7")

        // The same values are there in later handlers.
        try await client.send(text: #"{"type":"whoami"}"#)
        let reply = try await client.nextJSON()
        XCTAssertEqual(reply["room"] as? String, "blue room")
        XCTAssertEqual(reply["token"] as? String, "abc")
    }

    func testConnDataPersistsAcrossMessagesOfOneConnection() async throws {
        let host = try await self.startHost([
            "a.lua": """
            endpoint {
              path = "/counter",
              on_open = function(conn) conn.data.count = 0 end,
              on = { inc = function(conn) conn.data.count = conn.data.count + 1; return { count = conn.data.count } end },
            }
            """,
        ])
        let a = try await host.connect("/counter")
        let b = try await host.connect("/counter")
        for expected in 1...3 {
            try await a.send(text: #"{"type":"inc"}"#)
            let reply = try await a.nextJSON()
            XCTAssertEqual(reply["count"] as? Int, expected)
        }
        try await b.send(text: #"{"type":"inc"}"#)
        let other = try await b.nextJSON()
        XCTAssertEqual(other["count"] as? Int, 1, "conn.data is per connection")
    }
}
