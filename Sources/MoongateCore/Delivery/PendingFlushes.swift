/// The gates an outbound batch wrote to without flushing, each listed once, so the batch ends
/// with one flush per connection however many writes it made there.
struct PendingFlushes {
    private var gates: [OutboundGate] = []

    /// Call before writing to `gate`: its first write since its last flush lists it.
    mutating func willWrite(to gate: OutboundGate) {
        if gate.unflushedBytes == 0 {
            self.gates.append(gate)
        }
    }

    func flush() {
        for gate in self.gates {
            gate.flushIfNeeded()
        }
    }
}
