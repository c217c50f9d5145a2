import LuaBridge
import NIOCore

/// A callback stopped where it waits for an I/O call (`http.get`, `sql.query`, ...). The script's
/// loop serves other callbacks meanwhile; the call's result resumes this one on the same loop.
final class WaitingCallback {
    let coroutine: LuaCoroutine
    let function: ScriptContext.DispatchFunction
    let started: NIODeadline
    /// Time spent running Lua (not waiting), for `moongate_lua_call_duration_seconds`.
    var runNanoseconds: Int64
    var operation: ScriptOperation
    var deadline: Scheduled<Void>?
    /// Called once: with the callback's results on the stack (to read and pop), or its failure.
    var finish: (Result<Void, ScriptError>) -> Void = { _ in }

    init(coroutine: LuaCoroutine, function: ScriptContext.DispatchFunction, started: NIODeadline, runNanoseconds: Int64, operation: ScriptOperation) {
        self.coroutine = coroutine
        self.function = function
        self.started = started
        self.runNanoseconds = runNanoseconds
        self.operation = operation
    }
}

/// An I/O call in flight, started by a host function for the callback that is running.
struct ScriptOperation {
    let id: Int
    let kind: String
    let what: String
    let started: NIODeadline
    let cancel: @Sendable () -> Void
}

/// What an I/O call hands back: the values its Lua function returns, and the outcome for metrics.
struct OperationResult: Sendable {
    var values: [LuaValue]
    var outcome: String

    static func failure(_ reason: String, outcome: String = "error") -> OperationResult {
        OperationResult(values: [.nil, .text(reason)], outcome: outcome)
    }
}

enum CallOutcome {
    /// Its results are on the stack.
    case finished
    /// It waits for I/O; set `finish` to learn how it ends.
    case waiting(WaitingCallback)
}

extension ScriptContext {

    /// Runs the dispatch function on a coroutine, so that it may wait for I/O. Finished: `results`
    /// values are on the stack. Waiting: the caller sets the callback's `finish`.
    func invoke(
        _ function: DispatchFunction,
        results: Int32,
        _ pushArguments: (LuaState) -> Int32
    ) throws(ScriptError) -> CallOutcome {
        let pushed = self.lua.pushWithinCap {
            self.lua.pushReference(self.dispatch(function))
            return pushArguments(self.lua) + 1
        }
        guard let pushed else {
            throw ScriptError(
                kind: .memory, script: self.file.displayName, line: nil,
                message: "\(function): the script's state is at its memory cap (--lua-memory): not enough memory"
            )
        }
        let arguments = pushed - 1
        let started = NIODeadline.now()
        self.startedOperation = nil
        self.isRunningCallback = true
        defer { self.isRunningCallback = false }
        let coroutine: LuaCoroutine
        let outcome: CoroutineOutcome
        do {
            (coroutine, outcome) = try self.lua.start(arguments: arguments, results: results)
        } catch {
            self.recordLuaCall(function, nanoseconds: (NIODeadline.now() - started).nanoseconds)
            self.startedOperation?.cancel()
            throw error
        }
        let ran = (NIODeadline.now() - started).nanoseconds
        switch outcome {
        case .finished:
            self.startedOperation?.cancel()
            self.recordLuaCall(function, nanoseconds: ran)
            return .finished
        case .suspended(let values):
            let operation = try self.operationWaitedFor(yielded: values, by: coroutine)
            let callback = WaitingCallback(coroutine: coroutine, function: function, started: started, runNanoseconds: ran, operation: operation)
            self.wait(callback)
            if let runtime = self.runtime {
                let bound = NIOLoopBound(callback, eventLoop: runtime.loop)
                callback.deadline = runtime.loop.scheduleTask(deadline: started + .interval(self.services.limits.callTimeout)) {
                    [weak runtime] in runtime?.withContext { $0.timeOut(bound.value) }
                }
            }
            return .waiting(callback)
        }
    }

    /// Whether the running code may wait: a callback, not a load, not inside a C function, and
    /// the script not stopping. Host functions that could also block check it to choose.
    var canWait: Bool {
        self.isRunningCallback && self.runtime != nil && !self.isStopping && self.lua.isYieldable
    }

    /// The host function behind an I/O call starts `work` for the running callback, which then
    /// yields to wait for it. Returns the operation's id, or why no call can start here.
    func startOperation(
        kind: String,
        what: String,
        _ work: @escaping @Sendable () async -> OperationResult
    ) -> Result<Int, OperationRefusal> {
        guard self.isRunningCallback, let runtime = self.runtime else {
            return .failure(.notInCallback)
        }
        guard !self.isStopping else {
            return .failure(.stopping)
        }
        guard self.lua.isYieldable else {
            return .failure(.insideCFunction)
        }
        // One call per yield: anything still here was never waited for.
        self.startedOperation?.cancel()
        self.lastOperation += 1
        let id = self.lastOperation
        let script = self.file.displayName
        let metrics = self.services.metrics.scriptIO
        let started = NIODeadline.now()
        metrics.started(script: script)
        let task = Task {
            let result = await work()
            metrics.finished(script: script, kind: kind, outcome: Task.isCancelled ? "cancelled" : result.outcome, nanoseconds: (NIODeadline.now() - started).nanoseconds)
            runtime.loop.execute {
                runtime.withContext { $0.operationFinished(id, result.values) }
            }
        }
        self.startedOperation = ScriptOperation(id: id, kind: kind, what: what, started: started, cancel: { task.cancel() })
        return .success(id)
    }

    /// Why a host function could not start an I/O call.
    enum OperationRefusal: Error {
        case notInCallback, stopping, insideCFunction

        func message(_ function: String) -> String {
            switch self {
            case .notInCallback:
                "\(function) can only wait inside a callback (a handler, poll, timer, initial, on_open or authorize), not while the script loads"
            case .stopping:
                "\(function): cancelled, the script is being reloaded or stopped"
            case .insideCFunction:
                "\(function) cannot wait inside a function called from C (a table.sort comparator, a string.gsub replacement, a metamethod)"
            }
        }
    }

    private func operationFinished(_ id: Int, _ values: [LuaValue]) {
        guard let callback = self.waitingCallbacks.removeValue(forKey: id) else {
            return  // timed out or cancelled meanwhile
        }
        var values = values
        if self.lua.pushWithinCap({
            for value in values {
                self.lua.push(value)
            }
            return Int32(values.count)
        }) == nil {
            // The call was made (a request sent, a row written): only its result is not handed
            // over. Said so, so that a script does not take it for a call to retry.
            values = [.nil, .text("done, but its result would pass the script's memory cap (--lua-memory): not enough memory")]
            self.lua.withoutMemoryLimit {
                for value in values {
                    self.lua.push(value)
                }
            }
        }
        let resumed = NIODeadline.now()
        self.startedOperation = nil
        self.isRunningCallback = true
        do {
            let outcome = try self.lua.resume(callback.coroutine, arguments: Int32(values.count))
            self.isRunningCallback = false
            callback.runNanoseconds += (NIODeadline.now() - resumed).nanoseconds
            switch outcome {
            case .finished:
                self.startedOperation?.cancel()
                self.end(callback)
                callback.finish(.success(()))
            case .suspended(let values):
                callback.operation = try self.operationWaitedFor(yielded: values, by: callback.coroutine)
                self.wait(callback)
            }
        } catch {
            self.isRunningCallback = false
            self.startedOperation?.cancel()
            callback.runNanoseconds += (NIODeadline.now() - resumed).nanoseconds
            self.end(callback)
            callback.finish(.failure(error))
        }
    }

    /// The prelude yields `(WAIT, id)` right after a host function started operation `id`.
    /// Anything else reaching the host is a script's own `coroutine.yield` outside a coroutine.
    private func operationWaitedFor(yielded values: Int32, by coroutine: LuaCoroutine) throws(ScriptError) -> ScriptOperation {
        let id = values == 2 ? self.lua.integer(at: -1) : nil
        self.lua.pop(values)
        guard let operation = self.startedOperation, operation.id == id else {
            self.startedOperation?.cancel()
            self.lua.discard(coroutine)
            throw ScriptError(
                kind: .runtime,
                script: self.file.displayName,
                line: nil,
                message: "coroutine.yield was called outside a coroutine: a callback cannot yield to the host"
            )
        }
        self.startedOperation = nil
        return operation
    }

    private func wait(_ callback: WaitingCallback) {
        self.waitingCallbacks[callback.operation.id] = callback
    }

    private func end(_ callback: WaitingCallback) {
        callback.deadline?.cancel()
        self.recordLuaCall(callback.function, nanoseconds: callback.runNanoseconds)
    }

    /// `--lua-timeout` passed: the call is cancelled and the callback fails; nothing else is touched.
    private func timeOut(_ callback: WaitingCallback) {
        guard self.waitingCallbacks.removeValue(forKey: callback.operation.id) != nil else { return }
        callback.operation.cancel()
        self.lua.discard(callback.coroutine)
        self.recordLuaCall(callback.function, nanoseconds: callback.runNanoseconds)
        let seconds = self.services.limits.callTimeout
        callback.finish(
            .failure(
                ScriptError(
                    kind: .timeout,
                    script: self.file.displayName,
                    line: nil,
                    message: "\(callback.operation.what) was still waiting when the callback reached its \(seconds.formatted) s limit (--lua-timeout); cancelled"
                )
            )
        )
    }

    /// A reload or shutdown: every waiting callback is cancelled, none resumes into any state.
    func cancelWaitingCallbacks() {
        self.isStopping = true
        let waiting = self.waitingCallbacks.values.sorted { $0.operation.id < $1.operation.id }
        self.waitingCallbacks = [:]
        for callback in waiting {
            callback.operation.cancel()
            callback.deadline?.cancel()
            self.lua.discard(callback.coroutine)
            callback.finish(
                .failure(
                    ScriptError(
                        kind: .cancelled,
                        script: self.file.displayName,
                        line: nil,
                        message: "\(callback.operation.what) was cancelled: the script is being reloaded or stopped"
                    )
                )
            )
        }
    }

    func recordLuaCall(_ function: DispatchFunction, nanoseconds: Int64) {
        self.services.metrics.recordLuaCall(script: self.file.displayName, kind: function.metricKind, nanoseconds: nanoseconds)
    }
}

extension Double {
    /// `30`, or `2.5`: seconds as an operator wrote them.
    var formatted: String {
        self == self.rounded() && abs(self) < 1e15 ? String(Int(self)) : String(self)
    }
}
