import CoreMetrics
import NIOConcurrencyHelpers
import NIOCore
import Prometheus

/// The host's metrics, recorded through swift-metrics into this server's own Prometheus registry
/// (no process-wide bootstrap, so several hosts can run in one process) and served at `/metrics`.
final class HostMetrics: Sendable {
    private let registry = PrometheusCollectorRegistry()
    let factory: PrometheusMetricsFactory
    private let endpoints = NIOLockedValueBox<[String: EndpointMetrics]>([:])
    private let dimensioned = NIOLockedValueBox<[String: CoreMetrics.Counter]>([:])
    private let timers = NIOLockedValueBox<[String: CoreMetrics.Timer]>([:])

    let reloadDuration: CoreMetrics.Timer
    let sessionsOpen: CoreMetrics.Gauge
    let sessionEventsBuffered: CoreMetrics.Gauge
    let sessionBytesBuffered: CoreMetrics.Gauge
    let sessionEvents: CoreMetrics.Counter
    let sessionsClosed: CoreMetrics.Counter
    let scriptIO: ScriptIOMetrics

    init() {
        var factory = PrometheusMetricsFactory(registry: self.registry)
        let clusterBuckets: [Duration] = [
            .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
            .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .seconds(1),
        ]
        factory.durationHistogramBuckets["moongate_cluster_pull_duration_seconds"] = clusterBuckets
        factory.durationHistogramBuckets["moongate_cluster_wake_to_delivery_seconds"] = clusterBuckets
        factory.durationHistogramBuckets["moongate_lua_call_duration_seconds"] = [
            .microseconds(10), .microseconds(50), .microseconds(100), .microseconds(500), .milliseconds(1),
            .milliseconds(5), .milliseconds(10), .milliseconds(50), .milliseconds(100), .milliseconds(500), .seconds(1),
        ]
        factory.durationHistogramBuckets["moongate_script_io_duration_seconds"] = [
            .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(50), .milliseconds(100),
            .milliseconds(500), .seconds(1), .seconds(5), .seconds(10), .seconds(30),
        ]
        self.factory = factory
        self.reloadDuration = CoreMetrics.Timer(label: "moongate_reload_duration_seconds", factory: factory)
        self.sessionsOpen = CoreMetrics.Gauge(label: "moongate_sessions", factory: factory)
        self.sessionEventsBuffered = CoreMetrics.Gauge(label: "moongate_session_buffered_events", factory: factory)
        self.sessionBytesBuffered = CoreMetrics.Gauge(label: "moongate_session_buffered_bytes", factory: factory)
        self.sessionEvents = CoreMetrics.Counter(label: "moongate_session_events_total", factory: factory)
        self.sessionsClosed = CoreMetrics.Counter(label: "moongate_sessions_closed_total", factory: factory)
        self.scriptIO = ScriptIOMetrics(factory: factory)
    }

    func endpoint(_ path: String) -> EndpointMetrics {
        self.endpoints.withLockedValue { endpoints in
            if let existing = endpoints[path] {
                return existing
            }
            let created = EndpointMetrics(path: path, host: self)
            endpoints[path] = created
            return created
        }
    }

    /// A counter with dimensions known only at the event (a close code, a reload result), cached.
    func count(_ label: String, _ dimensions: [(String, String)], by amount: Int = 1) {
        let key = label + dimensions.map { "|\($0.0)=\($0.1)" }.joined()
        let counter = self.dimensioned.withLockedValue { cache in
            if let existing = cache[key] {
                return existing
            }
            let created = CoreMetrics.Counter(label: label, dimensions: dimensions, factory: self.factory)
            cache[key] = created
            return created
        }
        counter.increment(by: amount)
    }

    /// Time spent in one call into Lua, by script and kind (handler, poll, timer, ...).
    func recordLuaCall(script: String, kind: String, nanoseconds: Int64) {
        let key = script + "|" + kind
        let timer = self.timers.withLockedValue { cache in
            if let existing = cache[key] {
                return existing
            }
            let created = CoreMetrics.Timer(
                label: "moongate_lua_call_duration_seconds",
                dimensions: [("script", script), ("kind", kind)],
                factory: self.factory
            )
            cache[key] = created
            return created
        }
        timer.recordNanoseconds(nanoseconds)
    }

    /// The Prometheus text exposition of everything recorded.
    func render() -> String {
        var bytes: [UInt8] = []
        self.registry.emit(into: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// One endpoint's metrics, created once so the hot path only increments. A class: passing it
/// around costs one retain, not one per counter.
final class EndpointMetrics: Sendable {
    let path: String
    let open: CoreMetrics.Meter
    let connects: CoreMetrics.Counter
    let messagesIn: CoreMetrics.Counter
    let bytesIn: CoreMetrics.Counter
    let messagesOut: CoreMetrics.Counter
    let bytesOut: CoreMetrics.Counter
    let broadcasts: CoreMetrics.Counter
    let deliveries: CoreMetrics.Counter
    let acks: CoreMetrics.Counter
    let errorReplies: CoreMetrics.Counter
    let slowConsumers: CoreMetrics.Counter
    let missedPongs: CoreMetrics.Counter
    let resumes: CoreMetrics.Counter
    let resets: CoreMetrics.Counter
    /// The few totals the console reads back; swift-metrics counters are write-only.
    let tally = EndpointTally()
    private let host: HostMetrics

    init(path: String, host: HostMetrics) {
        let dimensions = [("endpoint", path)]
        let factory = host.factory
        func counter(_ label: String) -> CoreMetrics.Counter {
            CoreMetrics.Counter(label: label, dimensions: dimensions, factory: factory)
        }
        self.path = path
        self.host = host
        self.open = CoreMetrics.Meter(label: "moongate_connections", dimensions: dimensions, factory: factory)
        self.connects = counter("moongate_connects_total")
        self.messagesIn = counter("moongate_messages_in_total")
        self.bytesIn = counter("moongate_bytes_in_total")
        self.messagesOut = counter("moongate_messages_out_total")
        self.bytesOut = counter("moongate_bytes_out_total")
        self.broadcasts = counter("moongate_broadcasts_total")
        self.deliveries = counter("moongate_deliveries_total")
        self.acks = counter("moongate_acks_total")
        self.errorReplies = counter("moongate_error_replies_total")
        self.slowConsumers = counter("moongate_slow_consumer_disconnects_total")
        self.missedPongs = counter("moongate_missed_pongs_total")
        self.resumes = counter("moongate_resumes_total")
        self.resets = counter("moongate_resets_total")
    }

    func connectionOpened() {
        self.open.increment()
        self.connects.increment()
        self.tally.connections.add(1, ordering: .relaxed)
    }

    func connectionClosed(code: UInt16?) {
        self.open.decrement()
        self.tally.connections.subtract(1, ordering: .relaxed)
        self.host.count("moongate_disconnects_total", [("endpoint", self.path), ("code", code.map(String.init) ?? "1006")])
    }

    /// What one socket read of a client counted, added at once when the read is over.
    func add(_ read: ReadTally) {
        if read.messagesIn > 0 {
            self.messagesIn.increment(by: read.messagesIn)
            self.bytesIn.increment(by: read.bytesIn)
            self.tally.messagesIn.add(read.messagesIn, ordering: .relaxed)
        }
        if read.replies > 0 {
            self.sent(messages: read.replies, bytes: read.replyBytes)
        }
        if read.acks > 0 { self.acks.increment(by: read.acks) }
        if read.errorReplies > 0 { self.errorReplies.increment(by: read.errorReplies) }
    }

    func sent(messages: Int = 1, bytes: Int) {
        self.messagesOut.increment(by: messages)
        self.bytesOut.increment(by: bytes)
        self.tally.messagesOut.add(messages, ordering: .relaxed)
    }

    /// Acks and error replies, by their first bytes (for replies counted out elsewhere).
    func countKind(of reply: ByteBuffer) {
        switch ReadTally.Kind(of: reply) {
        case .ack: self.acks.increment()
        case .error: self.errorReplies.increment()
        case .other: break
        }
    }
}
