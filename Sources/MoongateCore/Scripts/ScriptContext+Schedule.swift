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
        let delay = TimeAmount.interval(seconds)
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
        do {
            try self.call(.timer, results: 0) { lua in
                lua.push(id)
                return 1
            }
        } catch {
            self.report(error, while: "running a timer", endpoint: nil, connection: nil)
        }
        self.batch.flush()
    }

    private func poll(_ index: Int) {
        let slot = self.slots[index - 1]
        let cluster = self.services.sessions.cluster
        let leads = self.specs[index - 1].watchLeader ? cluster : nil
        if let leads, !leads.leadership.leads("the watcher of \(slot.pattern)") {
            return
        }
        do {
            try self.call(.poll, results: 1) { lua in
                lua.push(index)
                return 1
            }
            let value = self.lua.string(at: -1)
            self.lua.pop()
            if self.lastPollError.removeValue(forKey: index) != nil {
                self.logger.info("watcher recovered", metadata: ["endpoint": "\(slot.pattern)"])
            }
            guard let value, value != slot.snapshot else { return }
            slot.snapshot = value
            self.batch.appendBroadcast(.text(value), to: [(slot, nil)], histories: .record(self.services.sessions))
            leads?.bus.relay(path: slot.pattern.description, text: value, snapshot: true)
            self.batch.flush()
        } catch {
            // A poll that keeps failing the same way is logged once, not every tick.
            if self.lastPollError[index] != error.description {
                self.lastPollError[index] = error.description
                self.report(error, while: "polling (retried every tick)", endpoint: index, connection: nil)
            }
        }
    }

    private func heartbeat(_ index: Int) {
        let slot = self.slots[index - 1]
        do {
            try self.call(.heartbeat, results: 1) { lua in
                lua.push(index)
                return 1
            }
            if let value = self.lua.string(at: -1) {
                // Heartbeats are not part of an endpoint's history.
                self.batch.append(.broadcast(slot.fanout, frame: self.batch.serialize(.text(value)), pathFilter: nil))
            }
            self.lua.pop()
        } catch {
            self.report(error, while: "building the heartbeat", endpoint: index, connection: nil)
        }
        self.batch.flush()
    }
}
