import Logging
import LuaBridge  // ScriptError: the error type in ScriptLoadFailure
import MoongateCore
import XCTest

/// `checkScripts`, the engine behind `moongate check`.
final class CheckScriptsTests: XCTestCase {
    private var directories: [URL] = []

    override func tearDown() async throws {
        for directory in self.directories {
            try? FileManager.default.removeItem(at: directory.deletingLastPathComponent())
        }
        try await super.tearDown()
    }

    private func check(_ files: [String: String]) async throws -> Result<[EndpointSpec], ScriptLoadFailure> {
        let directory = try TestHost.makeScriptsDirectory(files)
        self.directories.append(directory)
        let logs = LogCapture()
        return await checkScripts(directory: directory.path, logger: logs.logger(label: "check"))
    }

    private func errors(_ files: [String: String]) async throws -> [ScriptError] {
        switch try await self.check(files) {
        case .success(let specs):
            XCTFail("expected errors, got \(specs.map(\.path))")
            return []
        case .failure(let failure):
            return failure.errors
        }
    }

    func testSuccessListsEveryEndpointWithWhereItIsDeclared() async throws {
        let result = try await self.check([
            "a.lua": """
            endpoint {
              path = "/a",
              initial = { x = 1 },
              on = { start = function() end, stop = function() end },
            }

            endpoint { path = "/a/:id", keepalive = { ping_every = 0 } }
            """,
            "b.lua": """
            endpoint {
              path = "/b",
              watch = { every = 2, poll = function() return nil end },
              heartbeat = { every = 5 },
              on_text = function() end,
              max_message_size = 1024,
            }
            """,
        ])
        let specs = try result.get()
        XCTAssertEqual(specs.map(\.path), ["/a", "/a/:id", "/b"])
        XCTAssertEqual(specs.map(\.where), ["scripts/a.lua:1", "scripts/a.lua:7", "scripts/b.lua:1"])
        XCTAssertEqual(specs[0].handlerTypes, ["start", "stop"])
        XCTAssertTrue(specs[0].initial)
        XCTAssertEqual(specs[0].pingEvery, 20, "default ping interval")
        XCTAssertEqual(specs[0].pingTimeout, 10, "default ping timeout")
        XCTAssertEqual(specs[1].pingEvery, 0)
        XCTAssertEqual(specs[2].watchEvery, 2)
        XCTAssertEqual(specs[2].heartbeatEvery, 5)
        XCTAssertEqual(specs[2].maxMessageSize, 1024)
        XCTAssertTrue(specs[2].onText)
        XCTAssertEqual(
            specs[0].summary,
            "/a  (scripts/a.lua:1)  initial  on: start, stop  ping every 20s, timeout 10s"
        )
        XCTAssertTrue(specs[1].summary.hasSuffix("pings off"), specs[1].summary)
    }

    func testSyntaxErrorIsReportedAsFileLineMessage() async throws {
        let errors = try await self.errors([
            "good.lua": #"endpoint { path = "/good" }"#,
            "bad.lua": """
            endpoint {
              path = "/bad",
              on = { x = function() return 1 end
            }
            """,
        ])
        XCTAssertEqual(errors.count, 1)
        let error = try XCTUnwrap(errors.first)
        XCTAssertEqual(error.kind, .compile)
        XCTAssertEqual(error.script, "scripts/bad.lua")
        XCTAssertEqual(error.line, 4)
        XCTAssertTrue(error.description.hasPrefix("scripts/bad.lua:4: "), error.description)
        XCTAssertTrue(error.message.contains("expected"), error.message)
    }

    func testInvalidEndpointDefinitionIsReportedAtTheOffendingField() async throws {
        let errors = try await self.errors([
            "bad.lua": """
            local unrelated = 1

            endpoint {
              path = "/bad",
              on = { x = 1 },
            }
            """,
        ])
        let error = try XCTUnwrap(errors.first)
        XCTAssertEqual(error.description, "scripts/bad.lua:5: endpoint: 'on.x' must be a function")
        XCTAssertEqual(error.kind, .definition)
    }

    func testAFieldWrittenAnotherWayIsReportedAtTheEndpointCall() async throws {
        let errors = try await self.errors([
            "bad.lua": """
            local handlers = { x = 1 }
            endpoint {
              path = "/bad",
              ["on"] = handlers,
            }
            """,
        ])
        XCTAssertEqual(errors.first?.description, "scripts/bad.lua:2: endpoint: 'on.x' must be a function")
    }

    func testATailCalledDefinitionStillNamesItsLines() async throws {
        // `return endpoint { ... }` leaves no frame for Lua to name; the source still does.
        let errors = try await self.errors([
            "tail.lua": "local x = 1\nreturn endpoint {\n  path = \"/t\",\n  on_txt = function() end,\n}\n",
            "pair.lua": "endpoint { path = \"/a\" }\nreturn endpoint { path = \"/b\", keepalive = { timeout = 0 } }\n",
        ])
        XCTAssertEqual(
            errors.map(\.description).sorted(),
            [
                "scripts/pair.lua:2: endpoint: 'keepalive.timeout' must be a number of seconds from 0.01 to 1000000",
                "scripts/tail.lua:4: endpoint: unknown field 'on_txt'; did you mean on_text?",
            ]
        )
    }

    func testCommentedOutDefinitionsDoNotMisplaceTheLine() async throws {
        let errors = try await self.errors([
            "c.lua": """
            -- endpoint { path = "/old", keepalive = { timeout = 1 } }
            return endpoint {
              path = "/c",
              -- keepalive = { timeout = 5 },
              keepalive = { timeout = 0 },
            }
            """,
        ])
        XCTAssertEqual(errors.first?.description, "scripts/c.lua:5: endpoint: 'keepalive.timeout' must be a number of seconds from 0.01 to 1000000")
    }

    func testTheSecondOfTwoDefinitionsIsNamedAtItsOwnField() async throws {
        let errors = try await self.errors([
            "two.lua": """
            endpoint { path = "/a", keepalive = { timeout = 1 } }
            endpoint {
              path = "/b",
              keepalive = { timeout = -1 },
            }
            """,
        ])
        XCTAssertEqual(errors.first?.description, "scripts/two.lua:4: endpoint: 'keepalive.timeout' must be a number of seconds from 0.01 to 1000000")
    }

    func testOtherInvalidDefinitionsNameTheProblem() async throws {
        let cases: [(source: String, message: String)] = [
            (#"endpoint { path = "no-slash" }"#, "'path' must be a string starting with '/'"),
            (#"endpoint { path = "/a", bogus = true }"#, "unknown field 'bogus'"),
            (#"endpoint { path = "/a", watch = { every = 0, poll = function() end } }"#, "'watch.every' must be a number of seconds from 0.01 to 1000000"),
            (#"endpoint { path = "/a", keepalive = { timeout = -1 } }"#, "'keepalive.timeout' must be a number of seconds from 0.01 to 1000000"),
            (#"endpoint { path = "/a", max_message_size = 1.5 }"#, "'max_message_size' must be a whole number of bytes from 1 to 1073741824 (1 GiB)"),
            (#"endpoint { path = "/a?x" }"#, "'path' must not contain '?', '#' or spaces"),
            (#"endpoint { path = "/\xff" }"#, "'path' must be valid UTF-8"),
            // Infinity and NaN are no number of seconds: they would trap where they become a timer.
            (#"endpoint { path = "/a", keepalive = { timeout = math.huge } }"#, "'keepalive.timeout' must be a number of seconds from 0.01 to 1000000"),
            (#"endpoint { path = "/a", watch = { every = 0/0, poll = function() end } }"#, "'watch.every' must be a number of seconds from 0.01 to 1000000"),
            (#"endpoint { path = "/a", session = { retain = math.huge } }"#, "field 'session.retain' must be a finite number"),
            (#"endpoint { path = "/a", history = { size = 7.5 } }"#, "'history.size' must be a whole number >= 1"),
            (#"endpoint { path = "/a", history = { max_age = 1/0 } }"#, "'history.max_age' must be a number > 0"),
            (#"endpoint { path = "/a", max_message_size = math.huge }"#, "'max_message_size' must be a whole number of bytes from 1 to 1073741824 (1 GiB)"),
            // Typos at every depth, with the field they were probably meant to be.
            (#"endpoint { path = "/a", watch = { every = 2, poll = function() end, leadr = true } }"#, "unknown field 'watch.leadr'; did you mean leader?"),
            (#"endpoint { path = "/a", keepalive = { ping_evry = 5 } }"#, "unknown field 'keepalive.ping_evry'; did you mean ping_every?"),
            (#"endpoint { path = "/a", heartbeat = { every = 5, mesage = "x" } }"#, "unknown field 'heartbeat.mesage'; did you mean message?"),
            (#"endpoint { path = "/a", session = { histroy = 5 } }"#, "unknown field 'session.histroy'; did you mean history?"),
            (#"endpoint { path = "/a", histroy = { size = 5 } }"#, "unknown field 'histroy'; did you mean history?"),
            (#"endpoint { path = "/a", watch = { every = 2, poll = function() end, [1] = true } }"#, "unknown field 'watch.1'"),
            // A session named by a parameter the path does not have: every client would get 400.
            (#"endpoint { path = "/a/:job", session = { param = "jobid" } }"#, "'session.param' is 'jobid', which is not a parameter of the path /a/:job (:job); did you mean job?"),
            (#"endpoint { path = "/a/:job", session = {} }"#, "'session.param' is 'session', which is not a parameter of the path /a/:job (:job)"),
            // Past NIO's frame decoder's UInt32 bound, or so short or long that they trap or spin.
            (#"endpoint { path = "/a", max_message_size = 8*1024^3 }"#, "'max_message_size' must be a whole number of bytes from 1 to 1073741824 (1 GiB)"),
            (#"endpoint { path = "/a", keepalive = { ping_every = 1e19 } }"#, "'keepalive.ping_every' must be a number of seconds from 0.01 to 1000000 (0 disables it)"),
            (#"endpoint { path = "/a", watch = { every = 1e-12, poll = function() end } }"#, "'watch.every' must be a number of seconds from 0.01 to 1000000"),
            (#"endpoint { path = "/a", heartbeat = { every = 1e19 } }"#, "'heartbeat.every' must be a number of seconds from 0.01 to 1000000"),
            (#"endpoint { path = "/a", heartbeat = { every = 0.001 } }"#, "'heartbeat.every' must be a number of seconds from 0.01 to 1000000"),
        ]
        for (source, message) in cases {
            let errors = try await self.errors(["e.lua": source])
            XCTAssertEqual(errors.first?.description, "scripts/e.lua:1: endpoint: \(message)", source)
        }
    }

    func testDefinitionsAreReadWithTheSchemasDefaults() async throws {
        let result = try await self.check([
            "a.lua": """
            endpoint { path = "/plain" }
            endpoint {
              path = "/full",
              initial = "hello",
              on = { zeta = function() end, alpha = function() end },
              keepalive = { ping_every = 0 },
              origins = {},
              history = { size = 7 },
            }
            endpoint {
              path = "/s/:id",
              session = { param = "id", closes_on = {}, history = 3 },
              origins = { "https://a.example" },
              authorize = function() return true end,
            }
            """,
        ])
        guard case .success(let specs) = result else { return XCTFail("\(result)") }
        let plain = try XCTUnwrap(specs.first { $0.path == "/plain" })
        XCTAssertEqual(plain.pingEvery, 20)
        XCTAssertEqual(plain.pingTimeout, 10)
        XCTAssertNil(plain.origins, "no list: the host's --allowed-origin decides")
        XCTAssertTrue(plain.fixedOpen)
        XCTAssertEqual(plain.handlerTypes, [])
        let full = try XCTUnwrap(specs.first { $0.path == "/full" })
        XCTAssertEqual(full.initialText, "hello")
        XCTAssertEqual(full.handlerTypes, ["alpha", "zeta"])
        XCTAssertEqual(full.pingEvery, 0)
        XCTAssertEqual(full.origins, [], "an empty list is kept apart from no list")
        XCTAssertEqual(full.history?.history, 7)
        XCTAssertEqual(full.history?.closesOn, [])
        let session = try XCTUnwrap(specs.first { $0.path == "/s/:id" }?.session)
        XCTAssertEqual(session.param, "id")
        XCTAssertEqual(session.history, 3)
        XCTAssertEqual(session.closesOn, [], "an empty closes_on closes on nothing")
        XCTAssertEqual(session.resumeWait, SessionSettings().resumeWait)
        XCTAssertEqual(specs.first { $0.path == "/s/:id" }?.authorize, true)
        XCTAssertEqual(specs.first { $0.path == "/s/:id" }?.origins, ["https://a.example"])
    }

    func testDuplicatePathAcrossFilesIsReported() async throws {
        let errors = try await self.errors([
            "a.lua": #"endpoint { path = "/rooms/:id" }"#,
            "b.lua": "\n" + #"endpoint { path = "/rooms/:name" }"#,
        ])
        let error = try XCTUnwrap(errors.first)
        XCTAssertEqual(error.kind, .definition)
        XCTAssertEqual(error.description, "scripts/b.lua:2: endpoint /rooms/:name is already declared at scripts/a.lua:1 (as /rooms/:id)")
    }

    func testAMissingFolderIsReportedAsUnreadableNotAsACompileError() async throws {
        let missing = FileManager.default.temporaryDirectory.appendingPathComponent("moongate-missing-\(UInt64.random(in: 0...UInt64.max))")
        let result = await checkScripts(directory: missing.path, logger: LogCapture().logger(label: "check"))
        guard case .failure(let failure) = result else { return XCTFail("a missing folder cannot pass") }
        XCTAssertEqual(failure.errors.first?.kind, .unreadable)
        XCTAssertTrue(failure.errors.first?.message.hasPrefix("cannot read the scripts folder") == true, "\(failure.errors)")
    }

    func testScriptWithoutEndpointIsReported() async throws {
        let errors = try await self.errors(["empty.lua": "local x = 1"])
        XCTAssertEqual(errors.first?.description, #"scripts/empty.lua: declares no endpoint: call endpoint { path = "/...", ... }"#)
    }

    func testEmptyFolderIsReported() async throws {
        let errors = try await self.errors([:])
        XCTAssertEqual(errors.first?.message, "no *.lua scripts in this folder")
    }

    func testEveryBrokenFileIsReported() async throws {
        let errors = try await self.errors([
            "a.lua": "endpoint {",
            "b.lua": "error('boom')",
            "c.lua": #"endpoint { path = "/fine" }"#,
        ])
        XCTAssertEqual(errors.map(\.script).sorted(), ["scripts/a.lua", "scripts/b.lua"])
        XCTAssertTrue(errors.contains { $0.description == "scripts/b.lua:1: boom" }, "\(errors)")
    }
}
