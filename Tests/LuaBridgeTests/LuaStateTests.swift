import LuaBridge
import XCTest

/// Loading and calling chunks, values crossing the boundary, and stack hygiene.
final class LuaStateTests: XCTestCase {
    func testLoadAndCallReturnsResults() throws {
        let lua = try LuaState(scriptName: "t.lua")
        let values = try lua.run("return 1 + 2, 'two', true, nil, 2.5", results: 5)
        XCTAssertEqual(values, ["3", "two", "true", nil, "2.5"])
    }

    func testArgumentsArePassedToTheChunk() throws {
        let lua = try LuaState(scriptName: "t.lua")
        let values = try lua.run("local a, b, c = ...; return a .. ':' .. b .. ':' .. tostring(c)") { lua in
            lua.push("x")
            lua.push(42)
            lua.push(true)
            return 3
        }
        XCTAssertEqual(values, ["x:42:true"])
    }

    func testStringsWithEmbeddedZerosAndNonUTF8BytesRoundTrip() throws {
        let lua = try LuaState(scriptName: "t.lua")
        let bytes: [UInt8] = [0x61, 0x00, 0x62, 0xFF, 0xC3]
        try lua.load(source: Array("local s = ...; return #s, s".utf8), chunkName: "t.lua")
        bytes.withUnsafeBytes { lua.push(bytes: $0) }
        try lua.call(arguments: 1, results: 2)
        XCTAssertEqual(lua.integer(at: -2), 5)
        let back = lua.withBytes(at: -1) { Array($0) }
        XCTAssertEqual(back, bytes)
        lua.pop(2)
    }

    func testTablePushAndFieldReads() throws {
        let lua = try LuaState(scriptName: "t.lua")
        try lua.load(source: Array("local t = ...; return { joined = t.a .. t.b, n = 7 }".utf8), chunkName: "t.lua")
        lua.push(["a": "1", "b": "2"])
        try lua.call(arguments: 1, results: 1)
        XCTAssertEqual(lua.type(at: -1), .table)
        XCTAssertEqual(lua.stringField("joined", ofTableAt: -1), "12")
        XCTAssertEqual(lua.integerField("n", ofTableAt: -1), 7)
        XCTAssertNil(lua.stringField("missing", ofTableAt: -1))
        lua.pop()
    }

    func testReadersDoNotConvertInPlace() throws {
        let lua = try LuaState(scriptName: "t.lua")
        try lua.load(source: Array("return 10, '10', 1.5".utf8), chunkName: "t.lua")
        try lua.call(arguments: 0, results: 3)
        XCTAssertNil(lua.string(at: -3), "a number is not read as a string")
        XCTAssertEqual(lua.integer(at: -3), 10)
        XCTAssertNil(lua.integer(at: -2), "a numeric string is not read as a number")
        XCTAssertEqual(lua.string(at: -2), "10")
        XCTAssertNil(lua.integer(at: -1), "1.5 has no integer value")
        XCTAssertEqual(lua.number(at: -1), 1.5)
        lua.pop(3)
    }

    func testReferencesKeepValuesAcrossCalls() throws {
        let lua = try LuaState(scriptName: "t.lua")
        try lua.load(source: Array("local n = 0; return function() n = n + 1; return n end".utf8), chunkName: "t.lua")
        try lua.call(arguments: 0, results: 1)
        let counter = lua.popReference()
        for expected in 1...3 {
            lua.pushReference(counter)
            try lua.call(arguments: 0, results: 1)
            XCTAssertEqual(lua.integer(at: -1), expected)
            lua.pop()
        }
        lua.releaseReference(counter)
        XCTAssertEqual(lua.top, 0)
    }

    func testStackIsBalancedAfterSuccessRuntimeErrorAndCompileError() throws {
        let lua = try LuaState(scriptName: "t.lua", instructionBudget: 100_000)
        lua.push("sentinel")
        XCTAssertEqual(lua.top, 1)

        try lua.load(source: Array("return 1, 2".utf8), chunkName: "t.lua")
        try lua.call(arguments: 0, results: 2)
        XCTAssertEqual(lua.top, 3, "two results on top of the sentinel")
        lua.pop(2)
        XCTAssertEqual(lua.top, 1)

        try lua.load(source: Array("error('boom')".utf8), chunkName: "t.lua")
        _ = expectScriptError { () throws(ScriptError) in try lua.call(arguments: 0, results: 1) }
        XCTAssertEqual(lua.top, 1, "a failed call leaves nothing behind")

        _ = expectScriptError { () throws(ScriptError) in try lua.load(source: Array("return +".utf8), chunkName: "t.lua") }
        XCTAssertEqual(lua.top, 1, "a failed compile leaves nothing behind")

        try lua.load(source: Array("while true do end".utf8), chunkName: "t.lua")
        _ = expectScriptError { () throws(ScriptError) in try lua.call(arguments: 0, results: 0) }
        XCTAssertEqual(lua.top, 1, "a budget kill leaves nothing behind")

        try lua.load(source: Array("local a = ...; return a".utf8), chunkName: "t.lua")
        lua.push(5)
        try lua.call(arguments: 1, results: 0)
        XCTAssertEqual(lua.top, 1, "arguments are consumed")

        XCTAssertEqual(lua.string(at: -1), "sentinel")
        lua.pop()
        XCTAssertEqual(lua.top, 0)
    }

    func testManyCallsDoNotGrowTheStack() throws {
        let lua = try LuaState(scriptName: "t.lua")
        try lua.load(source: Array("return function(x) if x % 2 == 0 then error('even') end return x end".utf8), chunkName: "t.lua")
        try lua.call(arguments: 0, results: 1)
        let function = lua.popReference()
        for n in 0..<1000 {
            lua.pushReference(function)
            lua.push(n)
            do {
                try lua.call(arguments: 1, results: 1)
                lua.pop()
            } catch {
                XCTAssertEqual(error.message, "even")
            }
        }
        XCTAssertEqual(lua.top, 0)
    }

    func testContextPointerRoundTrips() throws {
        let lua = try LuaState(scriptName: "t.lua")
        // (Before setContext the slot holds whatever Lua's extra space held: not necessarily nil.)
        let box = NSObject()
        let pointer = Unmanaged.passUnretained(box).toOpaque()
        lua.setContext(pointer)
        XCTAssertEqual(LuaState.context(of: lua.pointer), pointer)
    }
}
