import NIOConcurrencyHelpers
import NIOCore

/// The clients of one endpoint, kept per I/O event loop so that a broadcast touches each loop
/// once and every member set is only ever read or changed on its own loop, without locks.
///
/// Members sit in dense arrays with their `OutboundGate`s, so a broadcast walks one array; each
/// gate decides by its connection's state whether the frame is written, held (the client is
/// still joining) or dropped (it is closing).
final class Fanout: Sendable {
    private let members: PerLoop<Members>
    let metrics: EndpointMetrics
    /// Members on every loop that take a broadcast's shared compressed frame: while there are
    /// none, a broadcast is not compressed at all.
    private let compressedMembers = NIOLockedValueBox(0)

    var wantsCompressedFrames: Bool { self.compressedMembers.withLockedValue { $0 > 0 } }

    init(loops: [any EventLoop], metrics: EndpointMetrics) {
        self.metrics = metrics
        self.members = PerLoop(loops: loops) { _ in Members() }
    }

    /// A new client. Must run on the connection's event loop.
    func add(_ connection: Connection) {
        let outbound = connection.onLoop.value.outbound
        guard self.box(for: connection.channel.eventLoop)?.value.insert(connection, outbound: outbound) == true else { return }
        if outbound.takesCompressedBroadcasts {
            self.compressedMembers.withLockedValue { $0 += 1 }
        }
    }

    /// The client is gone or no longer to be fed. Must run on the connection's event loop.
    func remove(_ connection: Connection) {
        guard self.box(for: connection.channel.eventLoop)?.value.remove(connection.id) == true else { return }
        if connection.onLoop.value.outbound.takesCompressedBroadcasts {
            self.compressedMembers.withLockedValue { $0 -= 1 }
        }
    }

    /// Offers `frame` (a complete serialised frame) to every member on `loop` whose path is
    /// `pathFilter` (all without one); returns how many get it. With `flushEach` each write is
    /// flushed at once; otherwise `pending` collects the gates that owe a flush. Must run on `loop`.
    func deliver(
        _ frame: ByteBuffer,
        compressed: ByteBuffer?,
        on loop: any EventLoop,
        pathFilter: String?,
        flushEach: Bool,
        pending: inout PendingFlushes
    ) -> Int {
        guard let box = self.box(for: loop) else { return 0 }
        let members = box.value
        var deliveries = 0
        if let pathFilter {
            for (connection, outbound) in zip(members.connections, members.gates) where connection.path == pathFilter {
                deliveries += Self.offer(frame, compressed: compressed, to: outbound, flushNow: flushEach, pending: &pending)
            }
        } else {
            for outbound in members.gates {
                deliveries += Self.offer(frame, compressed: compressed, to: outbound, flushNow: flushEach, pending: &pending)
            }
        }
        return deliveries
    }

    private static func offer(
        _ frame: ByteBuffer,
        compressed: ByteBuffer?,
        to outbound: OutboundGate,
        flushNow: Bool,
        pending: inout PendingFlushes
    ) -> Int {
        if !flushNow {
            pending.willWrite(to: outbound)
        }
        return outbound.deliver(broadcast: frame, compressed: compressed, flushNow: flushNow) ? 1 : 0
    }

    private func box(for loop: any EventLoop) -> NIOLoopBoundBox<Members>? {
        self.members.box(on: loop)
    }
}

/// One loop's members of a fan-out in dense arrays (removal swaps the last one in), with the
/// position of each.
private struct Members {
    private(set) var gates: [OutboundGate] = []
    private(set) var connections: [Connection] = []
    private var positions: [UInt64: Int] = [:]

    /// False if it was a member already.
    @discardableResult
    mutating func insert(_ connection: Connection, outbound: OutboundGate) -> Bool {
        guard self.positions[connection.id] == nil else { return false }
        self.positions[connection.id] = self.gates.count
        self.gates.append(outbound)
        self.connections.append(connection)
        return true
    }

    /// False if it was not a member.
    @discardableResult
    mutating func remove(_ id: UInt64) -> Bool {
        guard let position = self.positions.removeValue(forKey: id) else { return false }
        let last = self.gates.count - 1
        if position != last {
            self.gates[position] = self.gates[last]
            self.connections[position] = self.connections[last]
            self.positions[self.connections[position].id] = position
        }
        self.gates.removeLast()
        self.connections.removeLast()
        return true
    }
}
