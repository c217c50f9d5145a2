public import WebSocketClient
import Foundation
import NIOCore
import NIOPosix
import NIOWebSocket

/// `moongate bench`: drives a server speaking the harness protocol (hello on connect, relayed
/// broadcasts, acked events; the bundled `/bench` endpoint) or a session endpoint, and measures.
public struct BenchOptions: Sendable {
    public enum Mode: String, Sendable, CaseIterable {
        case idle, broadcast, ack, resume
    }

    public var mode: Mode
    /// Connections (broadcast: listeners; resume: reconnecting loops).
    public var connections: Int
    public var duration: Double
    public var warmup: Double
    /// ack: requests outstanding per connection.
    public var window: Int
    /// broadcast: message size in bytes.
    public var size: Int
    /// broadcast: the message is a JSON snapshot of job records (compresses as real dashboards
    /// do) instead of one long run of padding.
    public var snapshot = false
    /// resume: messages a reconnect waits for (`ready` plus the replay).
    public var expect: Int
    /// Handshakes in flight at once while connecting.
    public var handshakes: Int
    public var threads: Int

    public init(
        mode: Mode, connections: Int, duration: Double, warmup: Double = 1, window: Int = 1, size: Int = 200,
        expect: Int = 11, handshakes: Int = 256, threads: Int = 1
    ) {
        self.mode = mode
        self.connections = connections
        self.duration = duration
        self.warmup = warmup
        self.window = window
        self.size = size
        self.expect = expect
        self.handshakes = handshakes
        self.threads = threads
    }
}

/// What a run measured.
public struct BenchReport: Encodable, Sendable {
    public let mode: String
    public let url: String
    public let connections: Int
    public let connected: Int
    public let failed: Int
    public let seconds: Double
    /// Per second: deliveries (broadcast), replies (ack), reconnects (resume), messages (idle).
    public let rate: Double
    public let abnormal: Int
    public let closes: [String: Int]
    public let latencyMicroseconds: LatencySummaryValue?

    public struct LatencySummaryValue: Encodable, Sendable {
        public let p50: Double
        public let p99: Double
        public let max: Double
        public let samples: Int
    }

    public var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? String(decoding: encoder.encode(self), as: UTF8.self)) ?? "{}"
    }

    public var summary: String {
        let unit: String
        switch self.mode {
        case "broadcast": unit = "deliveries/s"
        case "ack": unit = "replies/s"
        case "resume": unit = "reconnects/s"
        default: unit = "messages/s"
        }
        var lines = [
            "moongate bench \(self.mode) \(self.url)",
            "connections: \(self.connected) of \(self.connections) connected, \(self.failed) failed",
            String(format: "measured %.1f s: %.0f %@", self.seconds, self.rate, unit),
            "abnormal closures: \(self.abnormal); close codes: \(self.closes.isEmpty ? "none" : self.closes.map { "\($0.key)×\($0.value)" }.sorted().joined(separator: " "))",
        ]
        if let latency = self.latencyMicroseconds {
            lines.append(String(format: "latency: p50 %.0f µs, p99 %.0f µs, max %.0f µs (%d samples)", latency.p50, latency.p99, latency.max, latency.samples))
        }
        return lines.joined(separator: "\n")
    }
}

public enum BenchRunner {
    public static func run(url: String, target: WebSocketTarget, options: BenchOptions) async throws -> BenchReport {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, options.threads))
        let stats = BenchStats()
        var channels: [any Channel] = []
        var seconds = options.duration

        switch options.mode {
        case .idle:
            channels = await Self.open(options.connections, target: target, role: { .idle }, stats: stats, group: group, options: options)
            stats.isMeasuring = true
            try await Task.sleep(for: .seconds(options.duration))
            stats.isMeasuring = false
        case .ack:
            channels = await Self.open(options.connections, target: target, role: { .ack(window: options.window) }, stats: stats, group: group, options: options)
            try await Self.measure(stats, options)
        case .broadcast:
            channels = await Self.open(options.connections, target: target, role: { .listener }, stats: stats, group: group, options: options)
            channels += await Self.open(1, target: target, role: { .sender(size: options.size, snapshot: options.snapshot) }, stats: stats, group: group, options: options)
            try await Self.measure(stats, options)
        case .resume:
            seconds = try await Self.reconnectLoops(target: target, stats: stats, group: group, options: options)
        }

        let counts = stats.snapshot
        for channel in channels {
            WebSocketDial.close(channel)
        }
        // Give the close handshakes a moment to go out before the loops stop.
        try? await Task.sleep(for: .milliseconds(200))
        try? await group.shutdownGracefully()
        let rate: Double
        switch options.mode {
        case .broadcast: rate = Double(counts.deliveries) / seconds
        case .ack: rate = Double(counts.replies) / seconds
        case .resume: rate = Double(counts.reconnects) / seconds
        case .idle: rate = Double(counts.messages) / seconds
        }
        let latency = LatencySummary(counts.latencies).map {
            BenchReport.LatencySummaryValue(p50: $0.p50, p99: $0.p99, max: $0.max, samples: $0.samples)
        }
        return BenchReport(
            mode: options.mode.rawValue,
            url: url,
            connections: options.connections,
            connected: counts.connected,
            failed: counts.failed,
            seconds: seconds,
            rate: rate,
            abnormal: counts.abnormal,
            closes: counts.closes,
            latencyMicroseconds: latency
        )
    }

    /// Warm up, then count only what happens during the measured window.
    private static func measure(_ stats: BenchStats, _ options: BenchOptions) async throws {
        try await Task.sleep(for: .seconds(options.warmup))
        stats.reset()
        stats.isMeasuring = true
        try await Task.sleep(for: .seconds(options.duration))
        stats.isMeasuring = false
    }

    /// Opens `count` connections, at most `handshakes` at a time.
    private static func open(
        _ count: Int,
        target: WebSocketTarget,
        role: () -> BenchRole,
        stats: BenchStats,
        group: any EventLoopGroup,
        options: BenchOptions
    ) async -> [any Channel] {
        var channels: [any Channel] = []
        var remaining = count
        while remaining > 0 {
            let batch = min(remaining, options.handshakes)
            remaining -= batch
            let futures = (0..<batch).map { _ in BenchConnection.open(target, role: role(), stats: stats, group: group) }
            for future in futures {
                if let channel = try? await future.get() {
                    channels.append(channel)
                    stats.update { $0.connected += 1 }
                } else {
                    stats.update { $0.failed += 1 }
                }
            }
        }
        return channels
    }

    /// `connections` loops that connect, wait for `expect` messages and close, until time is up.
    private static func reconnectLoops(
        target: WebSocketTarget,
        stats: BenchStats,
        group: any EventLoopGroup,
        options: BenchOptions
    ) async throws -> Double {
        let started = ContinuousClock.now
        stats.isMeasuring = true
        let deadline = started + .seconds(options.duration)
        await withTaskGroup(of: Void.self) { tasks in
            for _ in 0..<max(1, options.connections) {
                tasks.addTask {
                    while ContinuousClock.now < deadline {
                        let done = group.next().makePromise(of: Void.self)
                        guard (try? await BenchConnection.open(target, role: .reconnect(expect: options.expect, done: done), stats: stats, group: group).get()) != nil
                        else {
                            done.succeed()
                            stats.update { $0.failed += 1 }
                            continue
                        }
                        try? await done.futureResult.get()
                    }
                }
            }
        }
        stats.isMeasuring = false
        let elapsed = ContinuousClock.now - started
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }
}
