import LuaBridge
import NIOCore

/// A script going live and stopping, and what runs on its clock: watchers, heartbeats, timers.
extension ScriptContext {

    func activate(slots: [EndpointSlot], runtime: ScriptRuntime, loop: any EventLoop) {
        self.slots = slots
        self.runtime = runtime
        for (offset, spec) in self.specs.enumerated() {
            let index = offset + 1
            if let every = spec.watchEvery {
                self.poll(index)
                self.tasks.append(
                    loop.scheduleRepeatedTask(initialDelay: .interval(every), delay: .interval(every)) {
                        [weak runtime] _ in runtime?.withContext { $0.poll(index) }
                    }
                )
            }
            if let every = spec.heartbeatEvery {
                self.tasks.append(
                    loop.scheduleRepeatedTask(initialDelay: .interval(every), delay: .interval(every)) {
                        [weak runtime] _ in runtime?.withContext { $0.heartbeat(index) }
                    }
                )
            }
        }
        for timer in self.pendingTimers {
            self.startTimer(id: timer.id, seconds: timer.seconds, repeats: timer.repeats)
        }
        self.pendingTimers = []
        self.batch.flush()
    }

    func stop() {
        self.cancelWaitingCallbacks()
        self.tasks.forEach { $0.cancel() }
        self.tasks = []
        self.timers.values.forEach { $0.cancel() }
        self.timers = [:]
    }

    func startTimer(id: Int, seconds: Double, repeats: Bool) {
        guard let runtime else {
            self.pendingTimers.append((id, seconds, repeats))
            return
        }
        let loop = runtime.loop
        let delay = TimeAmount.interval(max(seconds, EndpointSchema.minimumInterval))
        if repeats {
            self.timers[id] = .repeating(
                loop.scheduleRepeatedTask(initialDelay: delay, delay: delay) { [weak runtime] _ in
                    runtime?.withContext { $0.fireTimer(id) }
                }
            )
        } else {
            self.timers[id] = .once(
                loop.scheduleTask(in: delay) { [weak runtime] in
                    runtime?.withContext { context in
                        context.timers[id] = nil
                        context.fireTimer(id)
                    }
                }
            )
        }
    }

    private func fireTimer(_ id: Int) {
        guard self.mayStart(.timer(id), what: "timer") else { return }
        self.runTick(.timer(id), while: "running a timer", endpoint: nil) { () throws(ScriptError) -> CallOutcome in
            try self.invoke(.timer, results: 0) { lua in
                lua.push(id)
                return 1
            }
        } finished: {}
    }

    private func poll(_ index: Int) {
        let slot = self.slots[index - 1]
        let cluster = self.services.sessions.cluster
        let leads = self.specs[index - 1].watchLeader ? cluster : nil
        if let leads, !leads.leadership.leads("the watcher of \(slot.pattern)") {
            return
        }
        guard self.mayStart(.poll(index), what: "watch.poll of \(slot.pattern)") else { return }
        let run = { () throws(ScriptError) -> CallOutcome in
            try self.invoke(.poll, results: 1) { lua in
                lua.push(index)
                return 1
            }
        }
        self.runTick(.poll(index), while: "polling (retried every tick)", endpoint: index, run) { [unowned self] in
            let value = self.lua.string(at: -1)
            self.lua.pop()
            if self.lastPollError.removeValue(forKey: index) != nil {
                self.logger.info("watcher recovered", metadata: ["endpoint": "\(slot.pattern)"])
            }
            guard let value, value != slot.snapshot else { return }
            let unchanged = SameJSON.same(value, slot.snapshot)
            // Kept as this state encodes it, so the next poll's byte comparison matches again.
            slot.snapshot = value
            guard !unchanged else { return }
            self.batch.appendBroadcast(.text(value), to: [(slot, nil)], histories: .record(self.services.sessions))
            leads?.bus.relay(path: slot.pattern.description, text: value, snapshot: true)
        }
    }

    private func heartbeat(_ index: Int) {
        let slot = self.slots[index - 1]
        guard self.mayStart(.heartbeat(index), what: "heartbeat of \(slot.pattern)") else { return }
        self.runTick(.heartbeat(index), while: "building the heartbeat", endpoint: index) { () throws(ScriptError) -> CallOutcome in
            try self.invoke(.heartbeat, results: 1) { lua in
                lua.push(index)
                return 1
            }
        } finished: { [unowned self] in
            if let value = self.lua.string(at: -1) {
                // Heartbeats are not part of an endpoint's history.
                self.batch.append(.broadcast(slot.fanout, frame: self.batch.serialize(.text(value), for: [slot.fanout]), pathFilter: nil))
            }
            self.lua.pop()
        }
    }

    /// A tick whose previous run still waits on I/O is skipped, not piled up; the first skip of a
    /// stretch is logged.
    private func mayStart(_ tick: Tick, what: String) -> Bool {
        guard self.busyTicks.contains(tick) else { return true }
        if self.overrunLogged.insert(tick).inserted {
            self.logger.warning("\(what) is still waiting from its last run: this run is skipped (logged once until it keeps up)")
        }
        return false
    }

    /// Runs a watcher, heartbeat or timer callback; `finished` reads and pops its results, now or
    /// once it has waited. A poll that keeps failing the same way is logged once, not every tick.
    private func runTick(
        _ tick: Tick,
        while activity: String,
        endpoint: Int?,
        _ run: () throws(ScriptError) -> CallOutcome,
        finished: @escaping () -> Void
    ) {
        let failed = { [unowned self] (error: ScriptError) in
            if error.kind == .cancelled { return }
            if case .poll(let index) = tick {
                guard self.lastPollError[index] != error.description else { return }
                self.lastPollError[index] = error.description
            }
            self.report(error, while: activity, endpoint: endpoint, connection: nil)
        }
        do {
            switch try run() {
            case .finished:
                finished()
                self.overrunLogged.remove(tick)
            case .waiting(let callback):
                self.busyTicks.insert(tick)
                callback.finish = { [unowned self] result in
                    self.busyTicks.remove(tick)
                    switch result {
                    case .success:
                        finished()
                        self.overrunLogged.remove(tick)
                    case .failure(let error):
                        failed(error)
                    }
                    self.batch.flush()
                }
            }
        } catch {
            failed(error)
        }
        self.batch.flush()
    }
}

/// A watcher's poll, a heartbeat or a script timer, by endpoint index or timer id.
enum Tick: Hashable {
    case poll(Int), heartbeat(Int), timer(Int)
}
