import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Handshakes refused for their `Origin`: each is counted in `/metrics`, and logged at warning
/// level with the endpoint, the origin and the remedy, at most once per origin per `interval`,
/// so a page that retries in a loop cannot flood the log (the next line says how many were
/// left out).
final class OriginRefusals: Sendable {
    static let interval: TimeAmount = .seconds(60)
    /// Origins remembered at once; an attacker choosing a new origin per request cannot grow it
    /// past this (the oldest are forgotten, which only means one more log line).
    static let capacity = 1024
    static let longestOrigin = 200

    private struct Entry {
        var loggedAt: NIODeadline
        var unlogged: Int
    }

    private let entries = NIOLockedValueBox<[String: Entry]>([:])
    private let metrics: HostMetrics

    init(metrics: HostMetrics) {
        self.metrics = metrics
    }

    /// Records one refusal; `endpointOrigins` is the endpoint's own `origins` list, if it has one
    /// (then `--allowed-origin` does not apply to it, and the remedy says so).
    func refused(
        origin: String,
        endpoint: String,
        script: String,
        endpointOrigins: [String]?,
        logger: Logger,
        now: NIODeadline = .now()
    ) {
        self.metrics.count("moongate_origin_refusals_total", [("endpoint", endpoint)])
        // The header is the client's to choose: a bounded key and log line whatever it sends.
        let origin = origin.utf8.count > Self.longestOrigin ? String(origin.prefix(Self.longestOrigin)) + "…" : origin
        guard let unlogged = self.shouldLog(origin: origin, now: now) else { return }
        let remedy =
            endpointOrigins == nil
            ? "allow it with --allowed-origin \(origin) (repeatable), or list it in the endpoint's origins"
            : "the endpoint lists its own origins (in \(script)); add \"\(origin)\" there"
        var metadata: Logger.Metadata = ["endpoint": "\(endpoint)", "origin": "\(origin)"]
        if unlogged > 0 {
            metadata["unlogged_refusals"] = "\(unlogged)"
        }
        logger.warning("refused a WebSocket handshake (403): origin \(origin) is not allowed on \(endpoint); \(remedy)", metadata: metadata)
    }

    /// How many origins are remembered now.
    var remembered: Int { self.entries.withLockedValue { $0.count } }

    /// Nil while this origin was logged less than `interval` ago; else how many refusals of it
    /// went unlogged since its last line.
    func shouldLog(origin: String, now: NIODeadline) -> Int? {
        self.entries.withLockedValue { entries in
            if var entry = entries[origin] {
                guard now - entry.loggedAt >= Self.interval else {
                    entry.unlogged += 1
                    entries[origin] = entry
                    return nil
                }
                entries[origin] = Entry(loggedAt: now, unlogged: 0)
                return entry.unlogged
            }
            if entries.count >= Self.capacity {
                entries = entries.filter { now - $0.value.loggedAt < Self.interval }
                if entries.count >= Self.capacity, let oldest = entries.min(by: { $0.value.loggedAt < $1.value.loggedAt }) {
                    entries[oldest.key] = nil
                }
            }
            entries[origin] = Entry(loggedAt: now, unlogged: 0)
            return 0
        }
    }
}
