import MoongateCore
import XCTest

/// Scripts run on their own loops, in order, under an instruction budget.
final class ScriptIsolationTests: HostTestCase {
    func testSlowPollInOneScriptDoesNotDelayAnotherScript() async throws {
        // The slow script's watcher, once armed, logs "spinning" and then busy-waits inside poll until
        // the test creates a file. So while the test holds that file back, the slow script is
        // provably busy: whatever the fast script answers in that window was not delayed by it.
        let host = try await self.startHost([
            "slow.lua": """
            local armed, spins = false, 0
            endpoint {
              path = "/slow",
              on = { arm = function() armed = true end },
              watch = { every = 0.05, poll = function()
                if not armed then return nil end
                armed = false
                spins = spins + 1
                log.info("spinning " .. spins)
                local give_up = now() + 5
                while file_mtime("release-" .. spins) == nil and now() < give_up do end
                return { type = "released", spins = spins }
              end },
            }
            """,
            "fast.lua": """
            endpoint { path = "/fast", on_text = function(conn, text) return "echo " .. text end }
            """,
        ]) { $0.limits.instructionBudget = 2_000_000_000 }
        let slow = try await host.connect("/slow")
        let fast = try await host.connect("/fast")

        try await slow.send(text: #"{"type":"arm"}"#)
        let armed = try await slow.nextJSON()
        XCTAssertEqual(armed["type"] as? String, "ack")
        try await host.logs.waitFor("spinning 1")

        // The slow script is inside poll now. The fast one answers, repeatedly.
        for round in 1...5 {
            try await fast.send(text: "ping \(round)")
            let reply = try await fast.nextText(timeout: 2)
            XCTAssertEqual(reply, "echo ping \(round)")
        }
        XCTAssertFalse(host.logs.contains("spinning 2"))

        // Release the slow script; its result arrives afterwards.
        try host.write(file: "release-1", source: "")
        let released = try await slow.nextJSON()
        XCTAssertEqual(released["type"] as? String, "released")
        XCTAssertEqual(released["spins"] as? Int, 1)
    }

    func testSlowPollDelaysOnlyItsOwnScript() async throws {
        // The counterpart: a message to the busy script itself waits for the poll to finish.
        let host = try await self.startHost([
            "slow.lua": """
            local armed, spins = false, 0
            endpoint {
              path = "/slow",
              on = {
                arm = function() armed = true end,
                probe = function() return { type = "probe", spins = spins } end,
              },
              watch = { every = 0.05, poll = function()
                if not armed then return nil end
                armed = false
                spins = spins + 1
                log.info("spinning " .. spins)
                local give_up = now() + 5
                while file_mtime("release") == nil and now() < give_up do end
                return { type = "released" }
              end },
            }
            """,
        ]) { $0.limits.instructionBudget = 2_000_000_000 }
        let slow = try await host.connect("/slow")
        try await slow.send(text: #"{"type":"arm"}"#)
        _ = try await slow.nextJSON()
        try await host.logs.waitFor("spinning 1")
        try await slow.send(text: #"{"type":"probe"}"#)
        try host.write(file: "release", source: "")
        // The poll's broadcast comes before the probe's answer: the script ran them in order.
        let first = try await slow.nextJSON()
        XCTAssertEqual(first["type"] as? String, "released")
        let probe = try await slow.nextJSON()
        XCTAssertEqual(probe["type"] as? String, "probe")
    }

    func testHandlersOfOneEndpointRunInOrder() async throws {
        let host = try await self.startHost([
            "a.lua": """
            local last = 0
            endpoint {
              path = "/seq",
              on = { n = function(conn, msg)
                local in_order = msg.n == last + 1
                last = msg.n
                return { type = "n", n = msg.n, in_order = in_order }
              end },
            }
            """,
        ])
        let client = try await host.connect("/seq")
        for n in 1...200 {
            try await client.send(text: #"{"type":"n","n":\#(n)}"#)
        }
        for n in 1...200 {
            let reply = try await client.nextJSON()
            XCTAssertEqual(reply["n"] as? Int, n)
            XCTAssertEqual(reply["in_order"] as? Bool, true, "handler for \(n) ran out of order")
        }
    }

    func testRepliesStayInOrderWhenHandledAndUnhandledTypesInterleave() async throws {
        // Unhandled types may be acked without the script: they must still not overtake replies.
        let host = try await self.startHost([
            "a.lua": """
            endpoint {
              path = "/mixed",
              on = { work = function(conn, msg)
                local x = 0
                for i = 1, 20000 do x = x + i end
                return { type = "done", id = msg.id }
              end },
            }
            """,
        ])
        let client = try await host.connect("/mixed")
        for n in 1...100 {
            let type = n % 3 == 0 ? "unhandled" : "work"
            try await client.send(text: #"{"type":"\#(type)","id":\#(n)}"#)
        }
        for n in 1...100 {
            let reply = try await client.nextJSON()
            XCTAssertEqual(reply["id"] as? Int, n, "reply \(n) out of order: \(reply)")
            XCTAssertEqual(reply["type"] as? String, n % 3 == 0 ? "ack" : "done")
        }
    }

    func testInfiniteLoopInHandlerGetsAnErrorAndTheConnectionKeepsWorking() async throws {
        let host = try await self.startHost([
            "a.lua": """
            local calls = 0
            endpoint {
              path = "/spin",
              on = {
                spin = function(conn, msg) while true do end end,
                sneaky = function(conn, msg)
                  while true do pcall(function() while true do end end) end
                end,
                coroutines = function(conn, msg)
                  while true do
                    coroutine.resume(coroutine.create(function() while true do end end))
                  end
                end,
                count = function(conn, msg) calls = calls + 1; return { type = "count", calls = calls } end,
              },
            }
            """,
        ]) { $0.limits.instructionBudget = 2_000_000 }
        let client = try await host.connect("/spin")
        let other = try await host.connect("/spin")

        try await client.send(text: #"{"type":"spin","id":"s1"}"#)
        let error = try await client.nextJSON(timeout: 10)
        XCTAssertEqual(error["type"] as? String, "error")
        XCTAssertEqual(error["error"] as? String, "handler ran too long")
        XCTAssertEqual(error["id"] as? String, "s1")

        try await client.send(text: #"{"type":"count"}"#)
        let count = try await client.nextJSON()
        XCTAssertEqual(count["calls"] as? Int, 1, "the state survived and the next message works")

        // A script's own pcall cannot swallow the budget error.
        try await client.send(text: #"{"type":"sneaky","id":2}"#)
        let sneaky = try await client.nextJSON(timeout: 10)
        XCTAssertEqual(sneaky["error"] as? String, "handler ran too long")
        XCTAssertEqual(sneaky["id"] as? Int, 2)

        // Nor can coroutines, each of which would otherwise start with a fresh count.
        try await client.send(text: #"{"type":"coroutines","id":3}"#)
        let coroutines = try await client.nextJSON(timeout: 10)
        XCTAssertEqual(coroutines["error"] as? String, "handler ran too long")
        XCTAssertEqual(coroutines["id"] as? Int, 3)

        try await other.send(text: #"{"type":"count"}"#)
        let otherCount = try await other.nextJSON()
        XCTAssertEqual(otherCount["calls"] as? Int, 2)
        XCTAssertTrue(host.logs.contains("instruction budget exceeded"))
    }

    func testInfiniteLoopInInitialGetsAnErrorPayload() async throws {
        let host = try await self.startHost([
            "a.lua": """
            endpoint {
              path = "/bad-initial",
              initial = function(conn) while true do end end,
              on = { hi = function() return { type = "hi" } end },
            }
            """,
        ]) { $0.limits.instructionBudget = 2_000_000 }
        let client = try await host.connect("/bad-initial")
        let first = try await client.nextText(timeout: 10)
        XCTAssertEqual(first, #"{"type":"error","error":"initial payload failed"}"#)
        try await client.send(text: #"{"type":"hi"}"#)
        let reply = try await client.nextJSON()
        XCTAssertEqual(reply["type"] as? String, "hi")
    }

    func testBytecodeCannotBeLoadedByAScript() async throws {
        let host = try await self.startHost([
            "a.lua": """
            endpoint {
              path = "/load",
              initial = function()
                local text_ok = load("return 1 + 1")
                local chunk, err = load(string.dump(function() return 42 end))
                return {
                  text = text_ok and text_ok() or "refused",
                  bytecode = chunk == nil and "refused" or "loaded",
                  err = tostring(err),
                  io = type(io), dofile = type(dofile), loadfile = type(loadfile),
                  -- require is the host's: it reads lib/ in the scripts folder, never a library or C module.
                  require_io = select(2, pcall(require, "io")), require_debug = select(2, pcall(require, "debug")),
                  execute = type(os.execute), debug = type(debug), package = type(package),
                }
              end,
            }
            """,
        ])
        let client = try await host.connect("/load")
        let result = try await client.nextJSON()
        XCTAssertEqual(result["text"] as? Int, 2)
        XCTAssertEqual(result["bytecode"] as? String, "refused")
        XCTAssertTrue((result["err"] as? String ?? "").contains("binary"), "\(result)")
        for name in ["io", "dofile", "loadfile", "execute", "debug", "package"] {
            XCTAssertEqual(result[name] as? String, "nil", name)
        }
        for name in ["io", "debug"] {
            let refusal = result["require_" + name] as? String ?? ""
            XCTAssertTrue(refusal.hasSuffix("module '\(name)' not found: no scripts/lib/\(name).lua"), refusal)
        }
    }
}
