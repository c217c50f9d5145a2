import XCTest

/// `after`, `every`, `timer:cancel()` and `now()` as scripts use them.
final class TimerTests: HostTestCase {
    func testAfterFiresOnceAndEveryCanBeCancelled() async throws {
        let host = try await self.startHost([
            "a.lua": """
            local ticks, ticker = 0, nil
            endpoint {
              path = "/t",
              keepalive = { ping_every = 0 },
              on = {
                later = function(conn, msg)
                  after(0.05, function() conn:send({ type = "later", tag = msg.tag }) end)
                end,
                start = function(conn, msg)
                  ticker = every(0.05, function()
                    ticks = ticks + 1
                    conn:send({ type = "tick", n = ticks })
                    if ticks == 3 then
                      ticker:cancel()
                      after(0.2, function() conn:send({ type = "after cancel", ticks = ticks }) end)
                    end
                  end)
                end,
              },
            }
            """,
        ])
        let client = try await host.connect("/t")
        try await client.send(text: #"{"type":"later","tag":"x","id":1}"#)
        let ack = try await client.nextJSON()
        XCTAssertEqual(ack["type"] as? String, "ack", "the handler answers before its timer fires")
        let later = try await client.nextJSON()
        XCTAssertEqual(later["type"] as? String, "later")
        XCTAssertEqual(later["tag"] as? String, "x")

        try await client.send(text: #"{"type":"start"}"#)
        _ = try await client.nextJSON()  // ack
        for n in 1...3 {
            let tick = try await client.nextJSON()
            XCTAssertEqual(tick["n"] as? Int, n)
        }
        // After the cancel, the next message is the one-shot's, with no fourth tick before it.
        let final = try await client.nextJSON()
        XCTAssertEqual(final["type"] as? String, "after cancel")
        XCTAssertEqual(final["ticks"] as? Int, 3)
    }

    func testTimerErrorIsLoggedAndLaterTimersStillRun() async throws {
        let host = try await self.startHost([
            "a.lua": """
            local n = 0
            every(0.05, function()
              n = n + 1
              if n == 1 then error("first tick fails") end
              broadcast({ type = "tick", n = n })
            end)
            endpoint { path = "/t", keepalive = { ping_every = 0 } }
            """,
        ])
        let client = try await host.connect("/t")
        let tick = try await client.nextJSON()
        XCTAssertEqual(tick["type"] as? String, "tick")
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(tick["n"] as? Int), 2)
        try await host.logs.waitFor("scripts/a.lua:4: first tick fails")
    }
}
