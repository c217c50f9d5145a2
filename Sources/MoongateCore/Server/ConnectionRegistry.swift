import NIOConcurrencyHelpers
import NIOCore

/// Every open WebSocket connection by id: how scripts address a connection, and how shutdown
/// knows when the last one has gone.
final class ConnectionRegistry: Sendable {
    private struct State {
        var nextID: UInt64 = 1
        var connections: [UInt64: Connection] = [:]
        var perAddress: [String: Int] = [:]
        var emptyWaiters: [EventLoopPromise<Void>] = []
    }

    private let state = NIOLockedValueBox(State())

    func makeID() -> UInt64 {
        self.state.withLockedValue { state in
            defer { state.nextID += 1 }
            return state.nextID
        }
    }

    func add(_ connection: Connection) {
        self.state.withLockedValue { state in
            state.connections[connection.id] = connection
            if let address = connection.remoteAddress {
                state.perAddress[address, default: 0] += 1
            }
        }
    }

    func remove(_ connection: Connection) {
        let waiters: [EventLoopPromise<Void>] = self.state.withLockedValue { state in
            guard state.connections.removeValue(forKey: connection.id) != nil else { return [] }
            if let address = connection.remoteAddress {
                state.perAddress[address, default: 1] -= 1
                if state.perAddress[address] == 0 {
                    state.perAddress[address] = nil
                }
            }
            guard state.connections.isEmpty else { return [] }
            defer { state.emptyWaiters = [] }
            return state.emptyWaiters
        }
        waiters.forEach { $0.succeed() }
    }

    subscript(id: UInt64) -> Connection? {
        self.state.withLockedValue { $0.connections[id] }
    }

    var count: Int { self.state.withLockedValue { $0.connections.count } }

    func count(from address: String) -> Int {
        self.state.withLockedValue { $0.perAddress[address] ?? 0 }
    }

    var all: [Connection] { self.state.withLockedValue { Array($0.connections.values) } }

    /// Succeeds once no connection is open.
    func whenEmpty(on loop: any EventLoop) -> EventLoopFuture<Void> {
        self.state.withLockedValue { state in
            if state.connections.isEmpty {
                return loop.makeSucceededVoidFuture()
            }
            let promise = loop.makePromise(of: Void.self)
            state.emptyWaiters.append(promise)
            return promise.futureResult
        }
    }
}
