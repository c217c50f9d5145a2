import NIOConcurrencyHelpers
import NIOCore

/// Counters and latency samples shared by every connection of a run.
final class BenchStats: Sendable {
    struct Counts: Sendable {
        var connected = 0
        var failed = 0
        var messages = 0
        var deliveries = 0
        var replies = 0
        var broadcasts = 0
        var reconnects = 0
        var closes: [String: Int] = [:]
        var abnormal = 0
        var latencies: [Int64] = []
    }

    private let counts = NIOLockedValueBox(Counts())
    private let measuring = NIOLockedValueBox(false)
    /// Latency samples kept, at most (a reservoir would be fairer; the first ones are enough).
    static let sampleLimit = 1_000_000

    func update(_ body: (inout Counts) -> Void) {
        self.counts.withLockedValue(body)
    }

    /// Only events while measuring count toward rates (not the ramp or the warm-up).
    var isMeasuring: Bool {
        get { self.measuring.withLockedValue { $0 } }
        set { self.measuring.withLockedValue { $0 = newValue } }
    }

    func record(latency nanoseconds: Int64) {
        self.counts.withLockedValue { counts in
            if counts.latencies.count < Self.sampleLimit {
                counts.latencies.append(nanoseconds)
            }
        }
    }

    var snapshot: Counts { self.counts.withLockedValue { $0 } }

    func reset() {
        self.counts.withLockedValue { counts in
            let connected = counts.connected
            counts = Counts()
            counts.connected = connected
        }
    }
}

/// Percentiles in microseconds.
struct LatencySummary: Encodable {
    let p50: Double
    let p99: Double
    let max: Double
    let samples: Int

    init?(_ nanoseconds: [Int64]) {
        guard !nanoseconds.isEmpty else { return nil }
        let sorted = nanoseconds.sorted()
        func at(_ fraction: Double) -> Double {
            Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))]) / 1000
        }
        self.p50 = at(0.5)
        self.p99 = at(0.99)
        self.max = Double(sorted.last!) / 1000
        self.samples = sorted.count
    }
}
