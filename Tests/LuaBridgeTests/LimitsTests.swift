import LuaBridge
import XCTest

/// The instruction budget and the memory cap stop runaway scripts without hurting the host.
final class LimitsTests: XCTestCase {
    func testInfiniteLoopIsStoppedWithBudgetKind() throws {
        let lua = try LuaState(scriptName: "t.lua", instructionBudget: 100_000)
        let error = try XCTUnwrap(expectScriptError { () throws(ScriptError) in
            try lua.run("local n = 0\nwhile true do n = n + 1 end", results: 0)
        })
        XCTAssertEqual(error.kind, .budget)
        XCTAssertEqual(error.script, "test.lua")
        XCTAssertEqual(error.line, 2)
        XCTAssertEqual(error.message, "instruction budget exceeded")
    }

    func testPcallCannotSwallowTheBudgetError() throws {
        let lua = try LuaState(scriptName: "t.lua", instructionBudget: 100_000)
        let looping = try XCTUnwrap(expectScriptError { () throws(ScriptError) in
            try lua.run("""
                while true do
                  pcall(function() while true do end end)
                end
                """, results: 0)
        })
        XCTAssertEqual(looping.kind, .budget)

        // Nor can it catch the error once and carry on to return normally.
        let escaping = try XCTUnwrap(expectScriptError { () throws(ScriptError) in
            try lua.run("""
                local ok, err = pcall(function() while true do end end)
                return "escaped: " .. tostring(err)
                """, results: 1)
        })
        XCTAssertEqual(escaping.kind, .budget)

        let viaXpcall = try XCTUnwrap(expectScriptError { () throws(ScriptError) in
            try lua.run("""
                xpcall(function() while true do end end, function(e) return e end)
                return "escaped"
                """, results: 1)
        })
        XCTAssertEqual(viaXpcall.kind, .budget)
    }

    func testCoroutinesCannotEvadeTheBudget() throws {
        let lua = try LuaState(scriptName: "t.lua", instructionBudget: 100_000)
        // Each coroutine burns the whole budget; the error must not stay inside coroutine.resume.
        let fresh = try XCTUnwrap(expectScriptError { () throws(ScriptError) in
            try lua.run("""
                local n = 0
                while n < 300 do
                  coroutine.resume(coroutine.create(function() while true do end end))
                  n = n + 1
                end
                return n
                """)
        })
        XCTAssertEqual(fresh.kind, .budget)

        // Small slices across many coroutines add up to the same single budget.
        let sliced = try XCTUnwrap(expectScriptError { () throws(ScriptError) in
            try lua.run("""
                local total = 0
                for i = 1, 1000 do
                  local co = coroutine.wrap(function() for j = 1, 1000 do total = total + 1 end end)
                  co()
                end
                return total
                """)
        })
        XCTAssertEqual(sliced.kind, .budget)

        let wrapped = try XCTUnwrap(expectScriptError { () throws(ScriptError) in
            try lua.run("""
                local co = coroutine.wrap(function()
                  local ok, err = pcall(function() while true do end end)
                  coroutine.yield(tostring(err))
                end)
                return co()
                """)
        })
        XCTAssertEqual(wrapped.kind, .budget)
        XCTAssertEqual(try lua.run("return 'usable'"), ["usable"])
    }

    func testBudgetIsPerCallAndTheStateStaysUsable() throws {
        let lua = try LuaState(scriptName: "t.lua", instructionBudget: 100_000)
        _ = expectScriptError { () throws(ScriptError) in try lua.run("while true do end", results: 0) }
        // Right after a kill, a call well under the budget runs to completion.
        let values = try lua.run("local s = 0 for i = 1, 1000 do s = s + i end return s")
        XCTAssertEqual(values, ["500500"])
        // Many calls, each under the budget, are fine although together they exceed it.
        for _ in 0..<20 {
            XCTAssertEqual(try lua.run("local s = 0 for i = 1, 10000 do s = s + 1 end return s"), ["10000"])
        }
    }

    func testZeroBudgetMeansUnlimited() throws {
        let lua = try LuaState(scriptName: "t.lua", instructionBudget: 0)
        XCTAssertEqual(try lua.run("local s = 0 for i = 1, 2000000 do s = s + 1 end return s"), ["2000000"])
        lua.instructionBudget = 1000
        let error = try XCTUnwrap(expectScriptError { () throws(ScriptError) in
            try lua.run("local s = 0 for i = 1, 2000000 do s = s + 1 end return s")
        })
        XCTAssertEqual(error.kind, .budget)
    }

    func testMemoryCapStopsAllocationWithMemoryKind() throws {
        let limit = 4 << 20
        let lua = try LuaState(scriptName: "t.lua", memoryLimit: limit)
        let error = try XCTUnwrap(expectScriptError { () throws(ScriptError) in
            try lua.run("""
                local t = {}
                for i = 1, 1e9 do t[i] = ("x"):rep(64) .. i end
                """, results: 0)
        })
        XCTAssertEqual(error.kind, .memory)
        XCTAssertTrue(error.message.contains("not enough memory"), error.message)
        XCTAssertLessThanOrEqual(lua.memoryInUse, limit)
        XCTAssertEqual(lua.top, 0)

        // The garbage is collectable and the state works afterwards.
        XCTAssertEqual(try lua.run("collectgarbage() return 40 + 2"), ["42"])
        XCTAssertLessThan(lua.memoryInUse, limit / 2)
    }

    func testOneHugeAllocationIsRefused() throws {
        let lua = try LuaState(scriptName: "t.lua", memoryLimit: 4 << 20)
        let error = try XCTUnwrap(expectScriptError { () throws(ScriptError) in
            try lua.run("return ('x'):rep(64 * 1024 * 1024)")
        })
        XCTAssertEqual(error.kind, .memory)
        XCTAssertEqual(try lua.run("return #('y'):rep(1000)"), ["1000"])
    }

    func testMemoryErrorInsidePcallIsCatchableButCapHolds() throws {
        let lua = try LuaState(scriptName: "t.lua", memoryLimit: 4 << 20)
        let values = try lua.run("""
            local ok, err = pcall(function() return ('x'):rep(64 * 1024 * 1024) end)
            return tostring(ok) .. " " .. tostring(err)
            """)
        XCTAssertEqual(values, ["false not enough memory"])
    }

    func testWithoutMemoryLimitLiftsTheCapOnlyInside() throws {
        let lua = try LuaState(scriptName: "t.lua", memoryLimit: 1 << 20)
        let big = String(repeating: "z", count: 2 << 20)
        lua.withoutMemoryLimit {
            lua.push(big)
        }
        XCTAssertEqual(lua.string(at: -1)?.count, big.count)
        lua.pop()
        let error = try XCTUnwrap(expectScriptError { () throws(ScriptError) in
            try lua.run("return ('z'):rep(2 * 1024 * 1024)")
        })
        XCTAssertEqual(error.kind, .memory)
    }
}
