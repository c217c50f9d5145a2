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

extension ContainmentTests {
    /// Pushes the function `source` returns.
    private func pushFunction(_ lua: LuaState, _ source: String) throws {
        try lua.load(source: Array(source.utf8), chunkName: "co.lua")
        try lua.call(arguments: 0, results: 1)
    }

    func testAnErrorObjectsToStringIsNeverCalledByTheHost() throws {
        let lua = try LuaState(scriptName: "co.lua", instructionBudget: 1_000_000)
        for body in ["error(\"x\")", "while true do end", "local t = {} for i = 1, 1e7 do t[i] = i end"] {
            try self.pushFunction(lua, """
                return function()
                  error(setmetatable({}, { __tostring = function() \(body) end }))
                end
                """)
            let error = try XCTUnwrap(expectScriptError { () throws(ScriptError) in _ = try lua.start(arguments: 0, results: 1) })
            XCTAssertEqual(error.message, "(error object is a table value)", body)
            XCTAssertEqual(lua.top, 0)
        }
    }

    func testACallbackReturningOrYieldingHugeNumbersOfValuesHandsTheHostOnlyWhatItWants() throws {
        let lua = try LuaState(scriptName: "co.lua", memoryLimit: 32 << 20, instructionBudget: 10_000_000)
        try self.pushFunction(lua, "return function() local t = {} for i = 1, 300000 do t[i] = i end return 1, table.unpack(t) end")
        let (_, finished) = try lua.start(arguments: 0, results: 1)
        XCTAssertEqual(finished, .finished)
        XCTAssertEqual(lua.integer(at: -1), 1)
        XCTAssertEqual(lua.top, 1)
        lua.pop()
        try self.pushFunction(lua, "return function() local t = {} for i = 1, 300000 do t[i] = i end coroutine.yield('a', 'b', table.unpack(t)) end")
        let (coroutine, yielded) = try lua.start(arguments: 0, results: 1)
        XCTAssertEqual(yielded, .suspended(values: 2))
        XCTAssertEqual(lua.string(at: -2), "a")
        XCTAssertEqual(lua.string(at: -1), "b")
        lua.pop(2)
        lua.discard(coroutine)
    }

    func testTheTimeLimitStopsALoopOfUncountedCWork() throws {
        let lua = try LuaState(scriptName: "t.lua", instructionBudget: Int32.max)
        lua.timeLimit = 0.3
        let started = ContinuousClock.now
        let error = try XCTUnwrap(expectScriptError { () throws(ScriptError) in
            try lua.run("""
                local t = {}
                for i = 1, 2^18 do t[i] = i end
                while true do table.insert(t, 1, 0); table.remove(t, 1) end
                """, results: 0)
        })
        XCTAssertEqual(error.kind, .budget)
        XCTAssertEqual(error.message, "time limit (--lua-timeout) exceeded")
        XCTAssertEqual(error.line, 3)
        // Stopped by the limit, not by anything else: well before the budget could.
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(20))
    }

    func testLinearCFunctionsAreChargedByTheirInput() throws {
        let lua = try LuaState(scriptName: "t.lua", instructionBudget: 10_000_000)
        XCTAssertEqual(try lua.run("return ('abc'):upper() .. utf8.len('héllo') .. table.concat({1, 2}, ',')"), ["ABC51,2"])
        let error = try XCTUnwrap(expectScriptError { () throws(ScriptError) in
            try lua.run("""
                local s = string.rep("x", 2^22)
                for i = 1, 1000 do s:upper() end
                """, results: 0)
        })
        XCTAssertEqual(error.kind, .budget)
        XCTAssertEqual(error.line, 2)
    }

    func testTheTimeLimitHoldsAcrossWaits() throws {
        let lua = try LuaState(scriptName: "co.lua", instructionBudget: Int32.max)
        lua.timeLimit = 0.3
        try self.pushFunction(lua, """
            return function()
              local started = os.clock()
              while os.clock() - started < 0.2 do end
              coroutine.yield('wait', 1)
              started = os.clock()
              while os.clock() - started < 0.2 do end
              return "done"
            end
            """)
        let (coroutine, outcome) = try lua.start(arguments: 0, results: 1)
        XCTAssertEqual(outcome, .suspended(values: 2))
        lua.pop(2)
        // Each run alone fits the limit; the callback as a whole does not.
        let error = try XCTUnwrap(expectScriptError { () throws(ScriptError) in _ = try lua.resume(coroutine, arguments: 0) })
        XCTAssertEqual(error.kind, .budget)
        XCTAssertEqual(error.message, "time limit (--lua-timeout) exceeded")
    }

    func testValuesPushedPastTheCapAreRefused() throws {
        let lua = try LuaState(scriptName: "t.lua", memoryLimit: 4 << 20)
        try lua.run("held = {} for i = 1, 3 do held[i] = string.rep('x', 1000000) .. i end", results: 0)
        let big = [UInt8](repeating: 0x61, count: 2 << 20)
        let refused = lua.pushWithinCap {
            big.withUnsafeBytes { lua.push(bytes: $0) }
            return 1
        }
        XCTAssertNil(refused)
        XCTAssertEqual(lua.top, 0)
        // Garbage is collected before refusing: the same push fits once the script lets go.
        try lua.run("held = nil", results: 0)
        let accepted = lua.pushWithinCap {
            big.withUnsafeBytes { lua.push(bytes: $0) }
            return 1
        }
        XCTAssertEqual(accepted, 1)
        lua.pop()
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
