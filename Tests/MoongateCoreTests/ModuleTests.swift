import LuaBridge
import MoongateCore
import XCTest

/// `require("name")`: modules from the scripts folder's `lib/`, over a real socket where a
/// handler uses one, and through `moongate check` where one is broken.
final class ModuleTests: HostTestCase {
    private static let format = """
        local format = {}
        function format.shout(text) return string.upper(text) .. "!" end
        return format
        """

    private static let shouter = """
        local format = require("text.format")
        endpoint {
          path = "/shout",
          on = { say = function(conn, msg) return { type = "said", text = format.shout(msg.text) } end },
        }
        """

    func testAHandlerUsesAModuleFromLib() async throws {
        let host = try await self.startHost(["shout.lua": Self.shouter, "lib/text/format.lua": Self.format])
        let client = try await host.connect("/shout")
        try await client.send(text: #"{"type":"say","text":"hello"}"#)
        let reply = try await client.nextJSON()
        XCTAssertEqual(reply["text"] as? String, "HELLO!")
    }

    func testAModuleRunsOncePerStateAndIsShared() async throws {
        let host = try await self.startHost([
            "a.lua": """
            local first = require("counter")
            local again = require("counter")
            endpoint { path = "/a", initial = function() return { loads = LOADS, same = first == again, n = first.next() } end }
            """,
            "lib/counter.lua": """
            LOADS = (LOADS or 0) + 1
            local n = 0
            return { next = function() n = n + 1; return n end }
            """,
        ])
        let client = try await host.connect("/a")
        let initial = try await client.nextJSON()
        XCTAssertEqual(initial["loads"] as? Int, 1)
        XCTAssertEqual(initial["same"] as? Bool, true)
        let second = try await host.connect("/a").nextJSON()
        XCTAssertEqual(second["n"] as? Int, 2, "one module value for the whole state")
    }

    func testAModuleThatReturnsNothingIsTrue() async throws {
        let host = try await self.startHost([
            "a.lua": #"endpoint { path = "/a", initial = function() return { value = require("side") } end }"#,
            "lib/side.lua": "SIDE = 1",
        ])
        let initial = try await host.connect("/a").nextJSON()
        XCTAssertEqual(initial["value"] as? Bool, true)
    }

    func testAReloadReadsModulesAgainAndABrokenOneKeepsTheOldSet() async throws {
        let host = try await self.startHost(["shout.lua": Self.shouter, "lib/text/format.lua": Self.format])
        let client = try await host.connect("/shout")

        try host.write(file: "lib/text/format.lua", source: Self.format.replacingOccurrences(of: #""!""#, with: #""?""#))
        let summary = try await host.reload().get()
        XCTAssertEqual(summary.changed, ["/shout"], "a changed module changes the endpoints that require it")
        try await client.send(text: #"{"type":"say","text":"hi"}"#)
        let reloaded = try await client.nextJSON()
        XCTAssertEqual(reloaded["text"] as? String, "HI?", "the same connection runs the new module")

        try host.write(file: "lib/text/format.lua", source: "local format = {}\nfunction format.shout(\n")
        guard case .failure(let failure) = try await host.reload() else {
            return XCTFail("a broken module fails the reload")
        }
        XCTAssertEqual(failure.errors.map(\.description), ["scripts/lib/text/format.lua:3: <name> or '...' expected near <eof>"])
        try await client.send(text: #"{"type":"say","text":"still"}"#)
        let kept = try await client.nextJSON()
        XCTAssertEqual(kept["text"] as? String, "STILL?", "the previous set keeps serving")
    }

    // MARK: Through `moongate check`

    private func errors(_ files: [String: String]) async throws -> [ScriptError] {
        let directory = try TestHost.makeScriptsDirectory(files)
        defer { try? FileManager.default.removeItem(at: directory.deletingLastPathComponent()) }
        guard case .failure(let failure) = await checkScripts(directory: directory.path, logger: LogCapture().logger(label: "check")) else {
            XCTFail("expected errors")
            return []
        }
        return failure.errors
    }

    func testAnErrorInsideAModuleNamesTheModulesFileAndLine() async throws {
        let errors = try await self.errors([
            "a.lua": "require(\"boom\")\nendpoint { path = \"/a\" }\n",
            "lib/boom.lua": "local x = 1\nerror(\"boom at load\")\n",
        ])
        XCTAssertEqual(errors.map(\.description), ["scripts/lib/boom.lua:2: boom at load"])
    }

    func testAMissingModuleIsReportedAtTheRequire() async throws {
        let errors = try await self.errors(["a.lua": "local x = 1\nlocal m = require(\"nope.deep\")\nendpoint { path = \"/a\" }\n"])
        XCTAssertEqual(errors.map(\.description), ["scripts/a.lua:2: module 'nope.deep' not found: no scripts/lib/nope/deep.lua"])
    }

    func testAModuleNameCannotLeaveLib() async throws {
        for name in ["../a", "a/b", "", ".a", "a..b"] {
            let errors = try await self.errors(["a.lua": "require(\"\(name)\")\nendpoint { path = \"/a\" }\n"])
            XCTAssertTrue(errors.first?.description.hasPrefix("scripts/a.lua:1: require: '\(name)' is not a module name") == true, "\(name): \(errors)")
        }
    }

    func testACycleIsAnErrorNotAHang() async throws {
        let errors = try await self.errors([
            "a.lua": "require(\"one\")\nendpoint { path = \"/a\" }\n",
            "lib/one.lua": "require(\"two\")\n",
            "lib/two.lua": "require(\"one\")\n",
        ])
        XCTAssertEqual(errors.first?.description, "scripts/lib/two.lua:1: module 'one' is required again while it loads (a cycle)")
    }

    func testFilesUnderLibAreNotEndpoints() async throws {
        let directory = try TestHost.makeScriptsDirectory([
            "a.lua": #"endpoint { path = "/a" }"#,
            "lib/unused.lua": "this is not even Lua",
        ])
        defer { try? FileManager.default.removeItem(at: directory.deletingLastPathComponent()) }
        let specs = try await checkScripts(directory: directory.path, logger: LogCapture().logger(label: "check")).get()
        XCTAssertEqual(specs.map(\.path), ["/a"], "a module nobody requires is never read")
    }
}
