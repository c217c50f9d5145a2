import LuaBridge
import MoongateCore
import XCTest

/// Reloading scripts under live connections.
final class ReloadTests: HostTestCase {
    private static func versioned(_ version: Int) -> String {
        """
        endpoint {
          path = "/v",
          on = { which = function(conn, msg) return { type = "version", version = \(version) } end },
        }
        """
    }

    private func version(of client: TestWebSocketClient) async throws -> Int? {
        try await client.send(text: #"{"type":"which"}"#)
        let reply = try await client.nextJSON()
        return reply["version"] as? Int
    }

    func testChangedScriptServesExistingConnectionWithoutDroppingIt() async throws {
        let host = try await self.startHost(["v.lua": Self.versioned(1)])
        let client = try await host.connect("/v")
        let before = try await self.version(of: client)
        XCTAssertEqual(before, 1)

        try host.write(file: "v.lua", source: Self.versioned(2))
        let summary = try await host.reload().get()
        XCTAssertEqual(summary.changed, ["/v"])
        XCTAssertEqual(summary.added, [])
        XCTAssertEqual(summary.removed, [])

        let after = try await self.version(of: client)
        XCTAssertEqual(after, 2, "the same connection uses the new handler")
        XCTAssertEqual(host.connectionCount, 1)
    }

    func testUnchangedScriptIsReportedUnchanged() async throws {
        let host = try await self.startHost(["v.lua": Self.versioned(1)])
        let summary = try await host.reload().get()
        XCTAssertEqual(summary.unchanged, ["/v"])
        XCTAssertEqual(summary.changed, [])
    }

    func testBrokenScriptOnReloadFailsWithFileAndLineAndOldVersionKeepsServing() async throws {
        let host = try await self.startHost(["v.lua": Self.versioned(1)])
        let client = try await host.connect("/v")
        _ = try await self.version(of: client)

        try host.write(file: "v.lua", source: """
            endpoint {
              path = "/v",
              on = { which = function(conn, msg) return { version = 2 } end
            }
            """)
        let result = try await host.reload()
        guard case .failure(let failure) = result else {
            return XCTFail("a syntax error reloaded: \(result)")
        }
        XCTAssertEqual(failure.errors.count, 1)
        let error = try XCTUnwrap(failure.errors.first)
        XCTAssertEqual(error.kind, .compile)
        XCTAssertEqual(error.script, "scripts/v.lua")
        XCTAssertNotNil(error.line)
        XCTAssertTrue(error.description.hasPrefix("scripts/v.lua:\(error.line ?? -1): "), error.description)
        XCTAssertTrue(host.logs.contains("reload failed"))

        let still = try await self.version(of: client)
        XCTAssertEqual(still, 1, "the old version keeps serving")
        let newcomer = try await host.connect("/v")
        let newcomerVersion = try await self.version(of: newcomer)
        XCTAssertEqual(newcomerVersion, 1)
    }

    func testRuntimeErrorWhileLoadingFailsTheReloadWithItsLine() async throws {
        let host = try await self.startHost(["v.lua": Self.versioned(1)])
        try host.write(file: "v.lua", source: """
            local config = nil
            local port = config.port
            endpoint { path = "/v" }
            """)
        guard case .failure(let failure) = try await host.reload() else {
            return XCTFail("reloaded a script that fails while loading")
        }
        let error = try XCTUnwrap(failure.errors.first)
        XCTAssertEqual(error.kind, .runtime)
        XCTAssertEqual(error.description.prefix(16), "scripts/v.lua:2:")
    }

    func testOneBrokenFileFailsTheWholeReload() async throws {
        let host = try await self.startHost(["v.lua": Self.versioned(1), "w.lua": #"endpoint { path = "/w" }"#])
        let client = try await host.connect("/v")
        try host.write(file: "v.lua", source: Self.versioned(2))
        try host.write(file: "w.lua", source: "endpoint { path = ")
        guard case .failure(let failure) = try await host.reload() else {
            return XCTFail("reloaded with a broken file")
        }
        XCTAssertEqual(failure.errors.map(\.script), ["scripts/w.lua"])
        let version = try await self.version(of: client)
        XCTAssertEqual(version, 1, "all or nothing: the good change was not applied either")
    }

    func testRemovedEndpointClosesItsClientsWith1001() async throws {
        let host = try await self.startHost([
            "v.lua": Self.versioned(1),
            "gone.lua": #"endpoint { path = "/gone", initial = { type = "hi" } }"#,
        ])
        let doomed = try await host.connect("/gone")
        _ = try await doomed.nextJSON()
        let survivor = try await host.connect("/v")

        try host.remove(file: "gone.lua")
        let summary = try await host.reload().get()
        XCTAssertEqual(summary.removed, ["/gone"])
        XCTAssertEqual(summary.unchanged, ["/v"])

        let code = try await doomed.nextClose()
        XCTAssertEqual(code, 1001)
        try await doomed.waitForDisconnect()

        let version = try await self.version(of: survivor)
        XCTAssertEqual(version, 1)
        do {
            _ = try await host.connect("/gone")
            XCTFail("a removed endpoint still upgrades")
        } catch TestClientError.notUpgraded(let status) {
            XCTAssertEqual(status, 404)
        }
    }

    func testNewEndpointBecomesServableAndSummaryCountsEverything() async throws {
        let host = try await self.startHost([
            "v.lua": Self.versioned(1),
            "old.lua": #"endpoint { path = "/old" }"#,
            "same.lua": #"endpoint { path = "/same" }"#,
        ])
        do {
            _ = try await host.connect("/new")
            XCTFail("/new served before it exists")
        } catch TestClientError.notUpgraded(let status) {
            XCTAssertEqual(status, 404)
        }

        try host.write(file: "v.lua", source: Self.versioned(2))
        try host.remove(file: "old.lua")
        try host.write(file: "new.lua", source: """
            endpoint { path = "/new", initial = { type = "brand new" } }
            endpoint { path = "/new/:thing", initial = function(conn) return { thing = conn.params.thing } end }
            """)
        let summary = try await host.reload().get()
        XCTAssertEqual(summary.added.sorted(), ["/new", "/new/:thing"])
        XCTAssertEqual(summary.changed, ["/v"])
        XCTAssertEqual(summary.removed, ["/old"])
        XCTAssertEqual(summary.unchanged, ["/same"])
        XCTAssertTrue(summary.description.hasPrefix("2 added, 1 changed, 1 removed, 1 unchanged in "), summary.description)

        let fresh = try await host.connect("/new")
        let greeting = try await fresh.nextJSON()
        XCTAssertEqual(greeting["type"] as? String, "brand new")
        let thing = try await host.connect("/new/lamp")
        let thingGreeting = try await thing.nextJSON()
        XCTAssertEqual(thingGreeting["thing"] as? String, "lamp")
    }

    func testReloadKeepsBroadcastMembershipAndConnData() async throws {
        let script = { (tag: String) in
            """
            endpoint {
              path = "/room",
              initial = { type = "welcome" },
              on_open = function(conn) conn.data.name = "guest" end,
              on = {
                name = function(conn, msg) conn.data.name = msg.name end,
                say = function(conn, msg) broadcast({ tag = "\(tag)", from = conn.data.name }) end,
              },
            }
            """
        }
        let host = try await self.startHost(["room.lua": script("v1")])
        let a = try await host.connect("/room")
        let b = try await host.connect("/room")
        for client in [a, b] {
            let welcome = try await client.nextJSON()
            XCTAssertEqual(welcome["type"] as? String, "welcome")
        }
        try await a.send(text: #"{"type":"name","name":"alice"}"#)
        _ = try await a.nextJSON()

        try host.write(file: "room.lua", source: script("v2"))
        _ = try await host.reload().get()

        // Both clients are still in the endpoint's broadcast set after the swap. conn.data lived
        // in the old Lua state, so the new state starts over (documented here, not a promise).
        try await a.send(text: #"{"type":"say"}"#)
        for client in [a, b] {
            let said = try await client.nextJSON()
            XCTAssertEqual(said["tag"] as? String, "v2")
        }
    }

    func testWatcherOfReloadedScriptUsesTheNewPoll() async throws {
        let host = try await self.startHost([
            "w.lua": #"endpoint { path = "/w", watch = { every = 0.05, poll = function() return { v = 1 } end } }"#,
        ])
        let client = try await host.connect("/w")
        let first = try await client.nextJSON()
        XCTAssertEqual(first["v"] as? Int, 1)
        try host.write(file: "w.lua", source: #"endpoint { path = "/w", watch = { every = 0.05, poll = function() return { v = 2 } end } }"#)
        _ = try await host.reload().get()
        let second = try await client.nextJSON()
        XCTAssertEqual(second["v"] as? Int, 2)
    }
}
