import NIOConcurrencyHelpers

/// The host-wide bounds on what sessions hold in memory, and what they hold now. Past
/// `--sessions-max-bytes` or `--sessions-max-count` an append is refused (HTTP 507, a Lua error
/// for `emit`), never accepted and then dropped; one session's own limits (history, max_bytes,
/// max_age) still evict its oldest events as before.
final class SessionTally: Sendable {
    struct Limits: Sendable, Equatable {
        var maxBytes = 256 << 20
        var maxCount = 100_000
    }

    private struct State {
        var bytes = 0
        var limits = Limits()
        var metrics: HostMetrics?
    }

    private let state = NIOLockedValueBox(State())

    var limits: Limits {
        get { self.state.withLockedValue { $0.limits } }
        set { self.state.withLockedValue { $0.limits = newValue } }
    }

    func attach(metrics: HostMetrics) {
        self.state.withLockedValue { $0.metrics = metrics }
    }

    /// Bytes of events every session of this host holds.
    var bytes: Int { self.state.withLockedValue { $0.bytes } }

    /// Whether sessions may hold `more` bytes (negative when an append frees more than it adds).
    func admits(_ more: Int) -> Bool {
        self.state.withLockedValue { more <= 0 || $0.bytes + more <= $0.limits.maxBytes }
    }

    /// Whether a session may be created while `count` are held.
    func admitsSession(whileHolding count: Int) -> Bool {
        self.state.withLockedValue { count < $0.limits.maxCount }
    }

    func add(_ delta: Int) {
        guard delta != 0 else { return }
        let (bytes, metrics) = self.state.withLockedValue { state in
            state.bytes += delta
            return (state.bytes, state.metrics)
        }
        metrics?.sessionBytesBuffered.record(bytes)
    }

    /// The sweeper's count of what is held, which wins over the running tally (an append to a
    /// session just freed would otherwise be counted for good).
    func settle(bytes: Int) {
        self.state.withLockedValue { $0.bytes = bytes }
    }

    enum Bound: String {
        case bytes, count
    }

    /// Counts a refusal and says why, naming the flag.
    func refusal(_ bound: Bound) -> SessionError {
        let (limits, metrics) = self.state.withLockedValue { ($0.limits, $0.metrics) }
        metrics?.count("moongate_session_appends_refused_total", [("reason", bound.rawValue)])
        switch bound {
        case .bytes:
            return .full("sessions on this host hold \(limits.maxBytes) bytes, the most --sessions-max-bytes allows: the event was not stored")
        case .count:
            return .full("this host holds \(limits.maxCount) sessions, the most --sessions-max-count allows: the session was not created")
        }
    }
}
