import LuaBridge
import XCTest

/// What a script's standard library leaves out.
final class SandboxTests: XCTestCase {
    func testDangerousGlobalsAreAbsent() throws {
        let lua = try LuaState(scriptName: "t.lua")
        let names = ["io", "require", "package", "debug", "dofile", "loadfile"]
        let values = try lua.run("return " + names.map { "type(\($0))" }.joined(separator: ", "), results: Int32(names.count))
        for (name, value) in zip(names, values) {
            XCTAssertEqual(value, "nil", name)
        }
    }

    func testOSIsReducedToTimekeeping() throws {
        let lua = try LuaState(scriptName: "t.lua")
        let removed = ["execute", "exit", "remove", "rename", "tmpname", "setlocale"]
        let values = try lua.run("return " + removed.map { "type(os.\($0))" }.joined(separator: ", "), results: Int32(removed.count))
        for (name, value) in zip(removed, values) {
            XCTAssertEqual(value, "nil", "os.\(name)")
        }
        let kept = ["time", "clock", "date", "difftime"]
        let keptValues = try lua.run("return " + kept.map { "type(os.\($0))" }.joined(separator: ", "), results: Int32(kept.count))
        XCTAssertEqual(keptValues, kept.map { _ in "function" })
    }

    func testCallingARemovedFunctionIsAnErrorWithALine() throws {
        let lua = try LuaState(scriptName: "t.lua")
        let error = try XCTUnwrap(expectScriptError { () throws(ScriptError) in
            try lua.run("local x = 1\nos.execute('true')", results: 0)
        })
        XCTAssertEqual(error.line, 2)
        XCTAssertTrue(error.message.contains("attempt to call a nil value"), error.message)
    }

    func testSafeLibrariesArePresent() throws {
        let lua = try LuaState(scriptName: "t.lua")
        let libraries = ["string", "table", "math", "utf8", "coroutine", "os"]
        let values = try lua.run("return " + libraries.map { "type(\($0))" }.joined(separator: ", "), results: Int32(libraries.count))
        XCTAssertEqual(values, libraries.map { _ in "table" })
    }

    func testBytecodeIsRefusedByLoad() throws {
        let lua = try LuaState(scriptName: "t.lua")
        try lua.load(source: Array("return string.dump(function() return 42 end)".utf8), chunkName: "dump.lua")
        try lua.call(arguments: 0, results: 1)
        let bytecode = try XCTUnwrap(lua.withBytes(at: -1) { Array($0) })
        lua.pop()
        XCTAssertEqual(bytecode.first, 0x1B, "a precompiled chunk starts with ESC")

        let error = try XCTUnwrap(expectScriptError { () throws(ScriptError) in
            try lua.load(source: bytecode, chunkName: "evil.lua")
        })
        XCTAssertEqual(error.kind, .compile)
        XCTAssertTrue(error.message.contains("attempt to load a binary chunk"), error.message)
        XCTAssertEqual(lua.top, 0)
    }

    func testHostLibrariesAreOnlyHandedOverNotGlobal() throws {
        let lua = try LuaState(scriptName: "t.lua")
        XCTAssertEqual(try lua.run("return type(json)"), ["nil"])
        lua.pushHostLibraries()
        XCTAssertEqual(lua.type(at: -3), .table, "json")
        XCTAssertEqual(lua.type(at: -2), .table, "debug")
        XCTAssertEqual(lua.type(at: -1), .function, "charge")
        lua.pop(3)
        XCTAssertEqual(try lua.run("return type(json), type(debug)", results: 2), ["nil", "nil"])
    }
}
