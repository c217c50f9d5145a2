import CoreMetrics
import NIOCore

/// What `/metrics` says about the cluster: the nodes seen, how long a wake-up takes to reach the
/// clients, how long pulls take, and PostgreSQL errors by operation.
final class ClusterMetrics: Sendable {
    private let host: HostMetrics
    let nodes: CoreMetrics.Gauge
    let pullDuration: CoreMetrics.Timer
    let wakeToDelivery: CoreMetrics.Timer

    init(host: HostMetrics) {
        self.host = host
        self.nodes = CoreMetrics.Gauge(label: "moongate_cluster_nodes", factory: host.factory)
        self.pullDuration = CoreMetrics.Timer(label: "moongate_cluster_pull_duration_seconds", factory: host.factory)
        self.wakeToDelivery = CoreMetrics.Timer(label: "moongate_cluster_wake_to_delivery_seconds", factory: host.factory)
    }

    /// A PostgreSQL operation failed: `append`, `pull`, `load`, `notify`, `listen`, `heartbeat`, ...
    func failed(_ operation: String) {
        self.host.count("moongate_cluster_postgres_errors_total", [("operation", operation)])
    }

    /// Runs one operation against PostgreSQL, counting it if it fails.
    @discardableResult
    func counting<Value>(_ operation: String, _ body: () async throws -> Value) async throws -> Value {
        do {
            return try await body()
        } catch {
            self.failed(operation)
            throw error
        }
    }
}
