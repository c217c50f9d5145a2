import LuaBridge
import XCTest

/// Every error names the script file and line that caused it.
final class ScriptErrorTests: XCTestCase {
    private func error(_ source: String, chunkName: String = "scripts/t.lua") -> ScriptError? {
        let lua: LuaState
        do {
            lua = try LuaState(scriptName: "scripts/fallback.lua")
        } catch {
            XCTFail("no state: \(error)")
            return nil
        }
        return expectScriptError { () throws(ScriptError) in
            try lua.run(source, chunkName: chunkName, results: 0)
        }
    }

    func testCompileErrorNamesItsLine() throws {
        let error = try XCTUnwrap(self.error("""
            local a = 1
            local b = 2
            local c = = 3
            """))
        XCTAssertEqual(error.kind, .compile)
        XCTAssertEqual(error.script, "scripts/t.lua")
        XCTAssertEqual(error.line, 3)
        XCTAssertEqual(error.message, "unexpected symbol near '='")
        XCTAssertEqual(error.description, "scripts/t.lua:3: unexpected symbol near '='")
    }

    func testUnclosedBlockIsReportedWhereTheFileEnds() throws {
        let error = try XCTUnwrap(self.error("""
            function f()
              return 1

            """))
        XCTAssertEqual(error.kind, .compile)
        XCTAssertEqual(error.line, 3)
        XCTAssertTrue(error.message.contains("'end' expected"), error.message)
    }

    func testRuntimeErrorNamesItsLine() throws {
        let error = try XCTUnwrap(self.error("""
            local function helper()
              local t = nil
              return t.field
            end
            helper()
            """))
        XCTAssertEqual(error.kind, .runtime)
        XCTAssertEqual(error.script, "scripts/t.lua")
        XCTAssertEqual(error.line, 3)
        XCTAssertEqual(error.message, "attempt to index a nil value (local 't')")
        XCTAssertNotNil(error.traceback)
        XCTAssertTrue(error.traceback?.contains("scripts/t.lua:5") ?? false, error.traceback ?? "")
    }

    func testErrorWithLevelZeroIsBlamedOnTheCallingLine() throws {
        let error = try XCTUnwrap(self.error("""
            local x = 1

            error("x", 0)
            """))
        XCTAssertEqual(error.kind, .runtime)
        XCTAssertEqual(error.script, "scripts/t.lua")
        XCTAssertEqual(error.line, 3)
        XCTAssertEqual(error.message, "x")
        XCTAssertEqual(error.description, "scripts/t.lua:3: x")
    }

    func testErrorWithLevelZeroInsideAFunctionIsBlamedOnThatLine() throws {
        let error = try XCTUnwrap(self.error("""
            local function fail()
              error("inner", 0)
            end
            fail()
            """))
        XCTAssertEqual(error.line, 2)
        XCTAssertEqual(error.message, "inner")
    }

    func testErrorWithLevelTwoIsBlamedOnTheCaller() throws {
        let error = try XCTUnwrap(self.error("""
            local function check(x)
              if not x then error("bad x", 2) end
            end
            check(true)
            check(false)
            """))
        XCTAssertEqual(error.line, 5)
        XCTAssertEqual(error.message, "bad x")
    }

    func testNonStringErrorObjects() throws {
        let table = try XCTUnwrap(self.error("error({ code = 1 })"))
        XCTAssertEqual(table.message, "(error object is a table value)")
        XCTAssertEqual(table.line, 1)

        let custom = try XCTUnwrap(self.error("""
            local e = setmetatable({}, { __tostring = function() return "custom failure" end })
            error(e)
            """))
        // Not its __tostring: that would be script code run by the host outside every limit.
        XCTAssertEqual(custom.message, "(error object is a table value)")
        XCTAssertEqual(custom.line, 2)

        let number = try XCTUnwrap(self.error("error(42, 0)"))
        XCTAssertEqual(number.message, "42")
    }

    func testMessageThatLooksLocatedIsSplitAtItsLocation() throws {
        // A location at the start of the message wins over the frame that raised it.
        let error = try XCTUnwrap(self.error(#"error("other/file.lua:12: relayed", 0)"#))
        XCTAssertEqual(error.script, "other/file.lua")
        XCTAssertEqual(error.line, 12)
        XCTAssertEqual(error.message, "relayed")
    }

    func testColonsInTheChunkNameAreKept() throws {
        let error = try XCTUnwrap(self.error("error('boom')", chunkName: "C:/odd:name.lua"))
        XCTAssertEqual(error.script, "C:/odd:name.lua")
        XCTAssertEqual(error.line, 1)
        XCTAssertEqual(error.message, "boom")
    }

    func testAnErrorInsideTheHostsPreludeBlamesTheScriptLineThatCalledIt() throws {
        let lua = try LuaState(scriptName: "scripts/fallback.lua")
        try lua.run("function check(x) if not x then error('x is required') end end", chunkName: HostChunk.prelude, results: 0)
        let error = try XCTUnwrap(
            expectScriptError { () throws(ScriptError) in
                try lua.run("local y = 1\ncheck(nil)", chunkName: "scripts/t.lua", results: 0)
            }
        )
        XCTAssertEqual(error.script, "scripts/t.lua")
        XCTAssertEqual(error.line, 2)
        XCTAssertEqual(error.message, "x is required")
        // The traceback keeps the prelude's own name and real line numbers.
        XCTAssertTrue(error.traceback?.contains("\(HostChunk.prelude):1:") ?? false, error.traceback ?? "no traceback")
    }

    func testDescriptionWithoutLine() {
        let error = ScriptError(kind: .definition, script: "scripts/a.lua", line: nil, message: "declares no endpoint")
        XCTAssertEqual(error.description, "scripts/a.lua: declares no endpoint")
    }
}
