import LuaBridge
import XCTest

/// The host's coroutines: a callback runs, yields, is resumed with values, fails with its line,
/// and is charged instructions across its runs. No sockets: the state alone.
final class CoroutineTests: XCTestCase {
    private var lua: LuaState!

    override func setUpWithError() throws {
        self.lua = try LuaState(scriptName: "co.lua", instructionBudget: 200_000)
    }

    override func tearDown() {
        self.lua = nil
    }

    /// Pushes the function `source` returns.
    private func pushFunction(_ source: String) throws {
        try self.lua.load(source: Array(source.utf8), chunkName: "co.lua")
        try self.lua.call(arguments: 0, results: 1)
    }

    func testAFunctionThatDoesNotYieldFinishesWithExactlyTheResultsAsked() throws {
        try self.pushFunction("return function(a) return a + 1, 'extra' end")
        self.lua.push(41)
        let (_, outcome) = try self.lua.start(arguments: 1, results: 1)
        XCTAssertEqual(outcome, .finished)
        XCTAssertEqual(self.lua.integer(at: -1), 42)
        XCTAssertEqual(self.lua.top, 1)
        self.lua.pop()
    }

    func testAYieldSuspendsAndAResumeDeliversTheValuesWhereItStopped() throws {
        try self.pushFunction("return function() local got = coroutine.yield('wait', 7) return 'got ' .. got end")
        let (coroutine, outcome) = try self.lua.start(arguments: 0, results: 1)
        XCTAssertEqual(outcome, .suspended(values: 2))
        XCTAssertEqual(self.lua.string(at: -2), "wait")
        XCTAssertEqual(self.lua.integer(at: -1), 7)
        self.lua.pop(2)
        self.lua.push("answer")
        XCTAssertEqual(try self.lua.resume(coroutine, arguments: 1), .finished)
        XCTAssertEqual(self.lua.string(at: -1), "got answer")
        self.lua.pop()
        XCTAssertEqual(self.lua.top, 0)
    }

    func testAnErrorAfterAResumeNamesTheScriptLine() throws {
        try self.pushFunction("return function()\n  coroutine.yield()\n  error('broken after waiting')\nend")
        let (coroutine, _) = try self.lua.start(arguments: 0, results: 0)
        XCTAssertThrowsError(try self.lua.resume(coroutine, arguments: 0)) { error in
            let error = error as! ScriptError
            XCTAssertEqual(error.kind, .runtime)
            XCTAssertEqual(error.line, 3)
            XCTAssertTrue(error.message.contains("broken after waiting"), error.message)
        }
        XCTAssertEqual(self.lua.top, 0)
    }

    func testTheBudgetCountsEveryRunOfOneCallbackButNotTheWaits() throws {
        // Each run alone fits the budget of 200,000 instructions; together they do not.
        try self.pushFunction("return function() for round = 1, 10 do for i = 1, 50000 do end coroutine.yield() end end")
        let started = try self.lua.start(arguments: 0, results: 0)
        let coroutine = started.0
        var outcome = started.1
        var runs = 1
        var failure: ScriptError?
        while case .suspended(let values) = outcome {
            self.lua.pop(values)
            do {
                outcome = try self.lua.resume(coroutine, arguments: 0)
                runs += 1
            } catch {
                failure = error
                break
            }
        }
        XCTAssertEqual(failure?.kind, .budget)
        XCTAssertGreaterThan(runs, 1)
        XCTAssertLessThan(runs, 10)
        // A fresh callback gets a fresh budget.
        try self.pushFunction("return function() return 'fine' end")
        _ = try self.lua.start(arguments: 0, results: 1)
        XCTAssertEqual(self.lua.string(at: -1), "fine")
        self.lua.pop()
    }

    func testFinishedCoroutinesAreReusedAndDiscardedOnesAreNot() throws {
        try self.pushFunction("return function() return coroutine.running() end")
        let (first, _) = try self.lua.start(arguments: 0, results: 1)
        self.lua.pop()
        try self.pushFunction("return function() return 1 end")
        let (second, _) = try self.lua.start(arguments: 0, results: 1)
        self.lua.pop()
        XCTAssertTrue(first === second)
    }
}
