import Synchronization

/// Running totals for one endpoint that the console reads back to show connection counts and
/// message rates.
final class EndpointTally: Sendable {
    let connections = Atomic<Int>(0)
    let messagesIn = Atomic<Int>(0)
    let messagesOut = Atomic<Int>(0)
}
