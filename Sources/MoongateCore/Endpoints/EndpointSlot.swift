import NIOConcurrencyHelpers

/// Which script serves an endpoint right now: swapped on reload, cleared when the endpoint goes.
/// A class, so reading it for every message costs one retain, not a copy of the spec.
final class EndpointBinding: Sendable {
    let runtime: ScriptRuntime
    /// 1-based index of the endpoint among those its script declared.
    let index: Int
    let spec: EndpointSpec
    let routing: MessageRouting

    init(runtime: ScriptRuntime, index: Int, spec: EndpointSpec) {
        self.runtime = runtime
        self.index = index
        self.spec = spec
        self.routing = MessageRouting(spec: spec)
    }
}

/// The lasting identity of an endpoint path. It outlives reloads, so connections, their fan-out
/// membership and the watcher's last value survive a script being replaced.
final class EndpointSlot: Sendable {
    let pattern: PathPattern
    let fanout: Fanout
    let metrics: EndpointMetrics
    private let state: NIOLockedValueBox<State>

    private struct State {
        var binding: EndpointBinding?
        var snapshot: String?
        var history: Session?
    }

    init(pattern: PathPattern, fanout: Fanout, binding: EndpointBinding, metrics: EndpointMetrics) {
        self.pattern = pattern
        self.fanout = fanout
        self.metrics = metrics
        self.state = NIOLockedValueBox(State(binding: binding))
    }

    /// nil once the endpoint has been removed by a reload.
    var binding: EndpointBinding? {
        get { self.state.withLockedValue { $0.binding } }
        set { self.state.withLockedValue { $0.binding = newValue } }
    }

    /// The endpoint's broadcast history, for endpoints that declare `history = { ... }`.
    var history: Session? {
        get { self.state.withLockedValue { $0.history } }
        set { self.state.withLockedValue { $0.history = newValue } }
    }

    /// Keeps the history in step with the endpoint's declaration (kept across reloads).
    func adoptHistory(_ settings: SessionSettings?) {
        self.state.withLockedValue { state in
            guard let settings else {
                state.history = nil
                return
            }
            if state.history?.settings != settings {
                state.history = Session(id: "endpoint:" + self.pattern.description, settings: settings)
            }
        }
    }

    /// The watcher's latest value, sent to new clients of an endpoint without `initial`.
    var snapshot: String? {
        get { self.state.withLockedValue { $0.snapshot } }
        set { self.state.withLockedValue { $0.snapshot = newValue } }
    }
}
