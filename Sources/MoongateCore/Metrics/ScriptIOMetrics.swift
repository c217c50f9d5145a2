import CoreMetrics
import NIOConcurrencyHelpers
import NIOCore

/// What `/metrics` says about scripts' outbound calls (`http`, `sql`, `exec`, `jwt`, `emit`): how many
/// by kind and outcome, how long they took, and how many each script has in flight.
final class ScriptIOMetrics: Sendable {
    private let factory: any MetricsFactory
    private let calls = NIOLockedValueBox<[String: CoreMetrics.Counter]>([:])
    private let durations = NIOLockedValueBox<[String: CoreMetrics.Timer]>([:])
    private let inFlight = NIOLockedValueBox<[String: (gauge: CoreMetrics.Gauge, count: Int)]>([:])

    init(factory: any MetricsFactory) {
        self.factory = factory
    }

    func started(script: String) {
        self.adjustInFlight(script: script, by: 1)
    }

    /// `outcome`: `ok`, or what went wrong (`timeout`, `refused`, `error`, `cancelled`, ...).
    func finished(script: String, kind: String, outcome: String, nanoseconds: Int64) {
        self.adjustInFlight(script: script, by: -1)
        self.counter(kind: kind, outcome: outcome).increment()
        let timer = self.durations.withLockedValue { cache in
            if let existing = cache[kind] {
                return existing
            }
            let created = CoreMetrics.Timer(label: "moongate_script_io_duration_seconds", dimensions: [("kind", kind)], factory: self.factory)
            cache[kind] = created
            return created
        }
        timer.recordNanoseconds(nanoseconds)
    }

    /// A call the host would not start (a program not allowed, no such database).
    func refused(kind: String) {
        self.counter(kind: kind, outcome: "refused").increment()
    }

    private func counter(kind: String, outcome: String) -> CoreMetrics.Counter {
        self.calls.withLockedValue { cache in
            let key = kind + "|" + outcome
            if let existing = cache[key] {
                return existing
            }
            let created = CoreMetrics.Counter(label: "moongate_script_io_calls_total", dimensions: [("kind", kind), ("outcome", outcome)], factory: self.factory)
            cache[key] = created
            return created
        }
    }

    private func adjustInFlight(script: String, by change: Int) {
        let (gauge, count) = self.inFlight.withLockedValue { cache in
            var entry = cache[script] ?? (CoreMetrics.Gauge(label: "moongate_script_io_in_flight", dimensions: [("script", script)], factory: self.factory), 0)
            entry.count += change
            cache[script] = entry
            return entry
        }
        gauge.record(count)
    }
}
