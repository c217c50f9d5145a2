import NIOCore

/// The clients of one endpoint, kept per I/O event loop so that a broadcast touches each loop
/// once and every member set is only ever read or changed on its own loop, without locks.
final class Fanout: Sendable {
    private let members: [ObjectIdentifier: NIOLoopBoundBox<[UInt64: Connection]>]
    let metrics: EndpointMetrics

    init(loops: [any EventLoop], metrics: EndpointMetrics) {
        self.metrics = metrics
        var members: [ObjectIdentifier: NIOLoopBoundBox<[UInt64: Connection]>] = [:]
        for loop in loops {
            members[ObjectIdentifier(loop)] = .makeBoxSendingValue([:], eventLoop: loop)
        }
        self.members = members
    }

    /// Must run on the connection's event loop.
    func add(_ connection: Connection) {
        self.box(for: connection.channel.eventLoop)?.value[connection.id] = connection
    }

    /// Must run on the connection's event loop.
    func remove(_ connection: Connection) {
        self.box(for: connection.channel.eventLoop)?.value[connection.id] = nil
    }

    /// Calls `body` for each member on `loop`; must run on `loop`.
    func forEachMember(on loop: any EventLoop, _ body: (Connection) -> Void) {
        self.box(for: loop)?.value.values.forEach(body)
    }

    private func box(for loop: any EventLoop) -> NIOLoopBoundBox<[UInt64: Connection]>? {
        self.members[ObjectIdentifier(loop)]
    }
}
