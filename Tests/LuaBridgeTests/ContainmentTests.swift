import CLua
import LuaBridge
import XCTest

/// What a script cannot do to the host: C functions that would run long in one call are charged
/// to the budget, and a host function's results past the memory cap fail in Lua, in C, without a
/// Lua error ever unwinding a Swift frame.
final class ContainmentTests: XCTestCase {
    func testRepeatingNothingReturnsAtOnce() throws {
        let lua = try LuaState(scriptName: "t.lua", instructionBudget: 1_000_000)
        let results = try lua.run(#"return #string.rep("", 2^40) + #string.rep("", math.maxinteger, "") + #("x"):rep(0)"#)
        XCTAssertEqual(results, ["0"])
    }

    func testRepetitionsAreChargedToTheBudget() throws {
        let lua = try LuaState(scriptName: "t.lua", instructionBudget: 1_000_000)
        XCTAssertEqual(try lua.run(#"return string.rep("ab", 1000, ",")"#).first??.count, 2 * 1000 + 999)
        for source in [#"return string.rep("x", 10000000)"#, #"return string.rep("x", math.maxinteger)"#, #"return string.rep("", 2^50, "-")"#] {
            let error = try XCTUnwrap(expectScriptError { () throws(ScriptError) in try lua.run(source) }, source)
            XCTAssertEqual(error.kind, .budget, source)
            XCTAssertEqual(error.line, 1, source)
        }
    }

    func testTableMoveIsChargedToTheBudget() throws {
        let lua = try LuaState(scriptName: "t.lua", instructionBudget: 1_000_000)
        XCTAssertEqual(try lua.run("return table.concat(table.move({1, 2, 3}, 1, 3, 2), ',')"), ["1,1,2,3"])
        let error = try XCTUnwrap(expectScriptError { () throws(ScriptError) in
            try lua.run("table.move({}, 1, 2^26, 1)", results: 0)
        })
        XCTAssertEqual(error.kind, .budget)
        let widest = try XCTUnwrap(expectScriptError { () throws(ScriptError) in
            try lua.run("table.move({}, math.mininteger + 1, -1, 1)", results: 0)
        })
        XCTAssertEqual(widest.kind, .budget)
    }

    func testPcallCannotSwallowAChargedBudget() throws {
        let lua = try LuaState(scriptName: "t.lua", instructionBudget: 1_000_000)
        let error = try XCTUnwrap(expectScriptError { () throws(ScriptError) in
            try lua.run(#"pcall(string.rep, "x", 2^40); return "escaped""#)
        })
        XCTAssertEqual(error.kind, .budget)
    }

    func testStringsMetatableIsTheHosts() throws {
        let lua = try LuaState(scriptName: "t.lua")
        XCTAssertEqual(try lua.run(#"return getmetatable("")"#), ["string"])
        XCTAssertEqual(try lua.run(#"return ("abc"):upper()"#), ["ABC"])
    }

    func testResultsPastTheMemoryCapFailInLua() throws {
        let lua = try LuaState(scriptName: "t.lua", memoryLimit: 4 << 20, instructionBudget: 10_000_000)
        lua.pushGlobal("_G")
        lua.setFunctions([("big", pushEightMegabytes), ("small", pushHello), ("refuse", failWithMessage)])
        lua.pop()
        for _ in 0..<20 {
            let results = try lua.run("""
                local ok, err = pcall(function() return big() end)
                local ok2, err2 = pcall(function() return refuse() end)
                return tostring(ok) .. " " .. tostring(err) .. " | " .. tostring(ok2) .. " " .. tostring(err2) .. " | " .. small()
                """)
            let text = try XCTUnwrap(results.first ?? nil)
            XCTAssertTrue(text.hasPrefix("false test.lua:1: "), text)
            XCTAssertTrue(text.contains("not enough memory"), text)
            XCTAssertTrue(text.contains("| false test.lua:2: refused here | hello"), text)
        }
        XCTAssertLessThanOrEqual(lua.memoryInUse, 4 << 20)
        // Outside a pcall the error reaches the host as a memory error of the script's line.
        let error = try XCTUnwrap(expectScriptError { () throws(ScriptError) in try lua.run("local s = big()", results: 0) })
        XCTAssertEqual(error.kind, .memory)
        XCTAssertEqual(error.line, 1)
    }
}

private let pushEightMegabytes: moongate_swift_function = { state in
    let bytes = [CChar](repeating: 0x61, count: 8 << 20)
    bytes.withUnsafeBufferPointer { _ = lua_pushlstring(state, $0.baseAddress, $0.count) }
    return 1
}

private let pushHello: moongate_swift_function = { state in
    _ = lua_pushstring(state, "hello")
    return 1
}

private let failWithMessage: moongate_swift_function = { state in
    _ = lua_pushstring(state, "refused here")
    return -1
}
