import CLua

/// A Lua thread the host runs one callback on, so that the callback can stop where it waits for
/// I/O and go on later while the state serves other callbacks. Belongs to one ``LuaState``.
public final class LuaCoroutine {
    fileprivate let thread: OpaquePointer
    fileprivate let reference: Int32
    /// Instructions this callback has run so far, across its resumptions.
    fileprivate var spent: Int64 = 0
    /// When the callback's time is up, however often it waits meanwhile (0: no limit).
    fileprivate var deadline: Int64 = 0
    /// Results the callback's caller reads once it finishes.
    fileprivate var expectedResults: Int32 = 0

    fileprivate init(thread: OpaquePointer, reference: Int32) {
        self.thread = thread
        self.reference = reference
    }
}

@available(*, unavailable)
extension LuaCoroutine: Sendable {}

/// How a run of a coroutine ended, errors aside.
public enum CoroutineOutcome: Equatable {
    /// The function returned: its results (exactly as many as asked for) are on the main stack.
    case finished
    /// The function yielded this many values, now on the main stack, and waits to be resumed.
    case suspended(values: Int32)
}

extension LuaState {
    /// Calls the function below `arguments` values on the main stack on a coroutine, under the
    /// instruction budget. Finished: `results` values are left on the main stack, and the coroutine
    /// goes back to the idle ones for reuse. Suspended: the yielded values are on the main stack.
    /// On an error nothing is left on the stack and the coroutine is discarded.
    public func start(arguments: Int32, results: Int32) throws(ScriptError) -> (LuaCoroutine, CoroutineOutcome) {
        let coroutine = self.withoutMemoryLimit { self.idleCoroutines.popLast() ?? self.makeCoroutine() }
        coroutine.spent = 0
        coroutine.deadline = self.deadlineFromNow()
        coroutine.expectedResults = results
        _ = lua_checkstack(coroutine.thread, arguments + 1)
        lua_xmove(self.pointer, coroutine.thread, arguments + 1)
        return (coroutine, try self.run(coroutine, arguments: arguments))
    }

    /// Resumes a suspended coroutine with the `arguments` values on top of the main stack as the
    /// results of its yield. Outcomes as for ``start(arguments:results:)``.
    public func resume(_ coroutine: LuaCoroutine, arguments: Int32) throws(ScriptError) -> CoroutineOutcome {
        _ = lua_checkstack(coroutine.thread, arguments)
        lua_xmove(self.pointer, coroutine.thread, arguments)
        return try self.run(coroutine, arguments: arguments)
    }

    /// Drops a suspended coroutine that will never be resumed (its callback was cancelled).
    public func discard(_ coroutine: LuaCoroutine) {
        self.releaseReference(coroutine.reference)
    }

    private func makeCoroutine() -> LuaCoroutine {
        let thread = lua_newthread(self.pointer)!
        return LuaCoroutine(thread: thread, reference: self.popReference())
    }

    /// Values a callback hands the host when it yields: the prelude's (WAIT, operation id).
    static let yieldedValues: Int32 = 2

    private func run(_ coroutine: LuaCoroutine, arguments: Int32) throws(ScriptError) -> CoroutineOutcome {
        var count: Int32 = 0
        var spent = coroutine.spent
        let status = moongate_resume(
            self.pointer, coroutine.thread, arguments, &count, Int64(self.instructionBudget), &spent, coroutine.deadline
        )
        coroutine.spent = spent
        // The host takes only what it asked for (a script may return or yield any number of
        // values): the rest are dropped on the coroutine, so the main stack never has to grow
        // for them.
        let finishedOrYielded = status == MOONGATE_LUA_OK || moongate_is_yield(status) != 0
        let wanted = status == MOONGATE_LUA_OK ? coroutine.expectedResults : moongate_is_yield(status) != 0 ? Self.yieldedValues : 1
        if finishedOrYielded, count > wanted {
            lua_settop(coroutine.thread, lua_gettop(coroutine.thread) - (count - wanted))
            count = wanted
        }
        let room = self.withoutMemoryLimit { lua_checkstack(self.pointer, wanted + 1) }
        guard room != 0 else {
            self.discard(coroutine)
            throw ScriptError(kind: .memory, script: self.scriptName, line: nil, message: "not enough memory")
        }
        if status == MOONGATE_LUA_OK {
            let base = self.top
            lua_xmove(coroutine.thread, self.pointer, count)
            lua_settop(self.pointer, base + coroutine.expectedResults)
            // A burst of waiting callbacks leaves at most this many idle threads behind.
            if self.idleCoroutines.count < 64 {
                self.idleCoroutines.append(coroutine)
            } else {
                self.discard(coroutine)
            }
            return .finished
        }
        if moongate_is_yield(status) != 0 {
            lua_xmove(coroutine.thread, self.pointer, count)
            return .suspended(values: count)
        }
        lua_xmove(coroutine.thread, self.pointer, 1)
        let error = self.withoutMemoryLimit {
            moongate_describe_error(self.pointer, coroutine.thread, 0)
            return self.errorFromStack(status: status)
        }
        self.pop()
        self.discard(coroutine)
        throw error
    }
}
