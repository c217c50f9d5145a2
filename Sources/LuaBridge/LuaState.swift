import CLua

/// One Lua 5.4 state with Moongate's sandboxed standard library, a memory cap and an instruction
/// budget per call. Not thread-safe: a state belongs to exactly one serial executor.
public final class LuaState {
    /// The thread whose stack the helpers work on: the main one, or inside a host function the
    /// coroutine that called it (see ``onThread(_:_:)``).
    public private(set) var pointer: OpaquePointer
    private let mainThread: OpaquePointer
    private let allocation: UnsafeMutablePointer<moongate_limits>
    private let memoryLimit: Int
    /// Instructions one protected call may run before it is stopped; 0 disables the budget.
    public var instructionBudget: Int32
    /// Seconds one run of a call may take, checked with the budget (every thousand instructions):
    /// it stops a callback that loops over C functions whose own work the budget does not count.
    /// 0: no limit. Only applies while the budget does.
    public var timeLimit: Double = 0
    /// Name used for errors that carry no location of their own.
    public let scriptName: String
    /// Coroutines whose callbacks finished, kept for the next callbacks (see LuaState+Coroutines).
    var idleCoroutines: [LuaCoroutine] = []

    public init(scriptName: String, memoryLimit: Int = 0, instructionBudget: Int32 = 0) throws(ScriptError) {
        self.scriptName = scriptName
        self.memoryLimit = memoryLimit
        self.instructionBudget = instructionBudget
        self.allocation = .allocate(capacity: 1)
        self.allocation.initialize(to: moongate_limits(used: 0, limit: 0, budget: 0, spent: 0, tripped: 0, deadline: 0))
        guard let pointer = moongate_newstate(self.allocation) else {
            self.allocation.deallocate()
            throw ScriptError(kind: .memory, script: scriptName, line: nil, message: "cannot create a Lua state")
        }
        self.pointer = pointer
        self.mainThread = pointer
        moongate_open_sandboxed_libraries(pointer)
        self.allocation.pointee.limit = memoryLimit
    }

    deinit {
        lua_close(self.mainThread)
        self.allocation.deallocate()
    }

    /// Bytes the state holds now.
    public var memoryInUse: Int { self.allocation.pointee.used }

    public var top: Int32 { lua_gettop(self.pointer) }

    /// Whether the running thread may yield: not the main thread, and not inside a C function
    /// such as `table.sort`'s comparator or a metamethod.
    public var isYieldable: Bool { lua_isyieldable(self.pointer) != 0 }

    public func pop(_ count: Int32 = 1) { moongate_pop(self.pointer, count) }

    /// Runs a host function called from Lua on `thread` (the main thread or a coroutine) with the
    /// helpers working on that thread's stack, where its arguments are.
    public func onThread<Result>(_ thread: OpaquePointer, _ body: () -> Result) -> Result {
        let saved = self.pointer
        self.pointer = thread
        defer { self.pointer = saved }
        return body()
    }

    /// Stores an unretained pointer that host functions read back with ``context(of:)``.
    public func setContext(_ context: UnsafeMutableRawPointer?) {
        moongate_set_context(self.pointer, context)
    }

    public static func context(of state: OpaquePointer) -> UnsafeMutableRawPointer? {
        moongate_get_context(state)
    }

    /// Runs `body` with the memory cap lifted, for pushes the host makes outside a protected call:
    /// an allocation failure there could not be caught and would abort the process. Nests: inside
    /// a host function (where the trampoline has lifted the cap) the cap stays lifted afterwards.
    public func withoutMemoryLimit<Result>(_ body: () throws -> Result) rethrows -> Result {
        let cap = self.allocation.pointee.limit
        self.allocation.pointee.limit = 0
        defer { self.allocation.pointee.limit = cap }
        return try body()
    }

    /// The deadline (CLOCK_MONOTONIC nanoseconds) of a call starting now under ``timeLimit``; 0: none.
    func deadlineFromNow() -> Int64 {
        self.timeLimit > 0 ? moongate_now_nanoseconds() + Int64(min(self.timeLimit, 1e9) * 1e9) : 0
    }

    /// Runs `body`, which pushes values (and returns how many), with the memory cap lifted, since
    /// a push outside a protected call cannot fail safely; then holds the state to its cap: past
    /// it, a full collection runs, and if the state is still over, the values are dropped and nil
    /// is returned. What the host hands a script (a client's message, an I/O call's result) cannot
    /// pile up past the cap this way.
    public func pushWithinCap(_ body: () -> Int32) -> Int32? {
        let base = self.top
        let before = self.allocation.pointee.used
        let pushed = self.withoutMemoryLimit(body)
        // Scalars (a seq, a row count) take no memory of their own: never refused.
        guard self.allocation.pointee.used > before else { return pushed }
        guard self.memoryLimit > 0, self.allocation.pointee.limit > 0, self.allocation.pointee.used > self.memoryLimit else {
            return pushed
        }
        moongate_collect_garbage(self.pointer)
        guard self.allocation.pointee.used > self.memoryLimit else { return pushed }
        lua_settop(self.pointer, base)
        return nil
    }

    /// Bytes the state may still allocate under its memory cap (`Int.max` without one).
    public var memoryAvailable: Int {
        guard self.memoryLimit > 0 else { return .max }
        return max(0, self.memoryLimit - self.allocation.pointee.used)
    }

    /// Compiles `source` (text only: precompiled bytecode is refused) and pushes the chunk.
    /// `chunkName` is how errors name the file, e.g. `scripts/queue.lua`.
    public func load(source: [UInt8], chunkName: String) throws(ScriptError) {
        let status = source.withUnsafeBufferPointer { bytes in
            bytes.withMemoryRebound(to: CChar.self) { chars in
                luaL_loadbufferx(self.pointer, chars.baseAddress, chars.count, "@" + chunkName, "t")
            }
        }
        guard status == MOONGATE_LUA_OK else {
            let message = self.string(at: -1) ?? "cannot compile"
            self.pop()
            throw ScriptError.parse(
                kind: status == LUA_ERRMEM ? .memory : .compile,
                rawMessage: message,
                blamedScript: nil,
                blamedLine: nil,
                fallbackScript: chunkName
            )
        }
    }

    /// Calls the function below `arguments` values on the stack, under the instruction budget.
    /// On success `results` values are left on the stack (LUA_MULTRET for all); on failure nothing is.
    public func call(arguments: Int32, results: Int32) throws(ScriptError) {
        let functionIndex = self.top - arguments
        moongate_pushcfunction(self.pointer, moongate_message_handler)
        moongate_insert(self.pointer, functionIndex)
        moongate_set_budget(self.pointer, Int64(self.instructionBudget), self.deadlineFromNow())
        let status = moongate_pcall(self.pointer, arguments, results, functionIndex)
        moongate_set_budget(self.pointer, 0, 0)
        if status == MOONGATE_LUA_OK {
            moongate_remove(self.pointer, functionIndex)
            return
        }
        let error = self.withoutMemoryLimit { self.errorFromStack(status: status) }
        moongate_pop(self.pointer, 2)  // the error object and the message handler
        throw error
    }

    func errorFromStack(status: Int32) -> ScriptError {
        let state = self.pointer
        guard lua_type(state, -1) == LUA_TTABLE else {
            let message = self.string(at: -1) ?? "error object is not a string"
            let kind: ScriptError.Kind = status == LUA_ERRMEM ? .memory : .runtime
            return ScriptError.parse(
                kind: kind,
                rawMessage: message,
                blamedScript: nil,
                blamedLine: nil,
                fallbackScript: self.scriptName
            )
        }
        let message = self.stringField("message", ofTableAt: -1) ?? "unknown error"
        let source = self.stringField("source", ofTableAt: -1)
        let line = self.integerField("line", ofTableAt: -1).map { Int($0) }
        let traceback = self.stringField("traceback", ofTableAt: -1)
        var kind: ScriptError.Kind = .runtime
        if status == LUA_ERRMEM || message.hasSuffix("not enough memory") {
            kind = .memory
        } else if message.hasSuffix("instruction budget exceeded") || message.hasSuffix("time limit (--lua-timeout) exceeded") {
            kind = .budget
        }
        return ScriptError.parse(
            kind: kind,
            rawMessage: message,
            blamedScript: source,
            blamedLine: line,
            fallbackScript: self.scriptName,
            traceback: traceback
        )
    }
}

@available(*, unavailable)
extension LuaState: Sendable {}
