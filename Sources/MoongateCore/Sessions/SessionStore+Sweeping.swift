import NIOCore

extension SessionStore {
    /// Once a second on `loop`: frees closed sessions past their retention and records the totals.
    func startSweeping(on loop: any EventLoop, metrics: HostMetrics) -> RepeatedTask {
        loop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
            let totals = self.sweep()
            metrics.sessionsOpen.record(totals.sessions)
            metrics.sessionEventsBuffered.record(totals.events)
            metrics.sessionBytesBuffered.record(totals.bytes)
        }
    }
}
