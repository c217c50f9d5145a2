import NIOCore

/// The clients of one endpoint, kept per I/O event loop so that a broadcast touches each loop
/// once and every member set is only ever read or changed on its own loop, without locks.
///
/// A member is *joining* until its initial payload is out (broadcasts wait for it), then *ready*
/// until it starts closing or goes. Ready members' frame-encoder contexts sit in one contiguous
/// array, so a broadcast walks only that array and does not visit each client's state.
final class Fanout: Sendable {
    private let members: [ObjectIdentifier: NIOLoopBoundBox<LoopMembers>]
    let metrics: EndpointMetrics

    init(loops: [any EventLoop], metrics: EndpointMetrics) {
        self.metrics = metrics
        var members: [ObjectIdentifier: NIOLoopBoundBox<LoopMembers>] = [:]
        for loop in loops {
            members[ObjectIdentifier(loop)] = .makeBoxSendingValue(LoopMembers(), eventLoop: loop)
        }
        self.members = members
    }

    /// A new client, joining. Must run on the connection's event loop.
    func add(_ connection: Connection) {
        self.box(for: connection.channel.eventLoop)?.value.joining[connection.id] = connection
    }

    /// The client's initial payload is out: from now on broadcasts go straight to `writer`.
    /// Must run on the connection's event loop.
    func markReady(_ connection: Connection, writer: ChannelHandlerContext) {
        self.box(for: connection.channel.eventLoop)?.withValue { members in
            guard members.joining.removeValue(forKey: connection.id) != nil else { return }
            members.ready.insert(connection, writer: writer)
        }
    }

    /// The client is closing or gone. Must run on the connection's event loop.
    func remove(_ connection: Connection) {
        self.box(for: connection.channel.eventLoop)?.withValue { members in
            members.joining[connection.id] = nil
            members.ready.remove(connection.id)
        }
    }

    /// Calls `ready` with each ready member on `loop` and its writer, then `joining` with each
    /// joining member; must run on `loop`.
    func forEachMember(
        on loop: any EventLoop,
        ready: (Connection, ChannelHandlerContext) -> Void,
        joining: (Connection) -> Void
    ) {
        guard let box = self.box(for: loop) else { return }
        let members = box.value
        for (connection, writer) in zip(members.ready.connections, members.ready.writers) {
            ready(connection, writer)
        }
        members.joining.values.forEach(joining)
    }

    /// Writes and flushes `frame` (a complete serialised frame) to every ready member on `loop`
    /// and passes each joining one to `hold`; returns how many members got or will get it.
    /// Must run on `loop`.
    func writeAndFlush(_ frame: ByteBuffer, on loop: any EventLoop, hold: (Connection) -> Void) -> Int {
        guard let box = self.box(for: loop) else { return 0 }
        let members = box.value
        for writer in members.ready.writers {
            writer.writeAndFlush(NIOAny(frame), promise: nil)
        }
        members.joining.values.forEach(hold)
        return members.ready.writers.count + members.joining.count
    }

    private func box(for loop: any EventLoop) -> NIOLoopBoundBox<LoopMembers>? {
        self.members[ObjectIdentifier(loop)]
    }
}

/// One loop's members of a fan-out.
private struct LoopMembers {
    var joining: [UInt64: Connection] = [:]
    var ready = ReadyMembers()
}

/// Ready members in dense arrays (removal swaps the last one in), with the position of each.
private struct ReadyMembers {
    private(set) var writers: [ChannelHandlerContext] = []
    private(set) var connections: [Connection] = []
    private var positions: [UInt64: Int] = [:]

    mutating func insert(_ connection: Connection, writer: ChannelHandlerContext) {
        guard self.positions[connection.id] == nil else { return }
        self.positions[connection.id] = self.writers.count
        self.writers.append(writer)
        self.connections.append(connection)
    }

    mutating func remove(_ id: UInt64) {
        guard let position = self.positions.removeValue(forKey: id) else { return }
        let last = self.writers.count - 1
        if position != last {
            self.writers[position] = self.writers[last]
            self.connections[position] = self.connections[last]
            self.positions[self.connections[position].id] = position
        }
        self.writers.removeLast()
        self.connections.removeLast()
    }
}
