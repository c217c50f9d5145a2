import Foundation
import NIOCore
import NIOPosix
import XCTest

/// A value behind a lock, for state shared between a test and NIO callbacks.
final class LockedState<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) {
        self.value = value
    }

    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        self.lock.lock()
        defer { self.lock.unlock() }
        return try body(&self.value)
    }
}

/// A point in time some seconds from now; `remaining` never goes below a few milliseconds so that
/// a last attempt still gets to look at what has already arrived.
struct Deadline {
    let end: NIODeadline

    init(seconds: Double) {
        self.end = .now() + .nanoseconds(Int64(seconds * 1e9))
    }

    var remaining: Double {
        max(0.005, Double((self.end - .now()).nanoseconds) / 1e9)
    }

    var hasPassed: Bool { NIODeadline.now() >= self.end }
}

/// A FIFO of events pushed from NIO callbacks and awaited by one test task at a time, each wait
/// bounded by a deadline that fires on an event loop (no sleeping).
final class EventQueue<Element: Sendable & Equatable>: @unchecked Sendable {
    private struct Waiter {
        let id: Int
        let continuation: CheckedContinuation<Element?, Never>
        var timeout: Scheduled<Void>?
    }

    private let lock = NSLock()
    private var buffer: [Element] = []
    private var finished = false
    private var waiter: Waiter?
    private var nextWaiterID = 0
    private let terminal: Element

    /// `terminal` is what `next` returns forever once it has been pushed and the buffer is drained.
    init(terminal: Element) {
        self.terminal = terminal
    }

    func push(_ element: Element) {
        self.lock.lock()
        if self.finished {
            self.lock.unlock()
            return
        }
        if element == self.terminal {
            self.finished = true
        }
        if let waiter = self.waiter {
            self.waiter = nil
            self.lock.unlock()
            waiter.timeout?.cancel()
            waiter.continuation.resume(returning: element)
        } else {
            self.buffer.append(element)
            self.lock.unlock()
        }
    }

    func next(timeout: Double) async throws -> Element {
        let element: Element? = await withCheckedContinuation { continuation in
            self.lock.lock()
            if !self.buffer.isEmpty {
                let element = self.buffer.removeFirst()
                self.lock.unlock()
                continuation.resume(returning: element)
                return
            }
            if self.finished {
                self.lock.unlock()
                continuation.resume(returning: self.terminal)
                return
            }
            precondition(self.waiter == nil, "only one task may wait on an EventQueue at a time")
            self.nextWaiterID += 1
            let id = self.nextWaiterID
            self.waiter = Waiter(id: id, continuation: continuation, timeout: nil)
            self.lock.unlock()
            let timeoutTask = MultiThreadedEventLoopGroup.singleton.next().scheduleTask(in: .nanoseconds(Int64(timeout * 1e9))) {
                self.expire(id)
            }
            self.lock.lock()
            if self.waiter?.id == id {
                self.waiter?.timeout = timeoutTask
            }
            self.lock.unlock()
        }
        guard let element else {
            throw TestClientError.timeout("no event within \(timeout)s")
        }
        return element
    }

    private func expire(_ id: Int) {
        self.lock.lock()
        guard let waiter = self.waiter, waiter.id == id else {
            self.lock.unlock()
            return
        }
        self.waiter = nil
        self.lock.unlock()
        waiter.continuation.resume(returning: nil)
    }
}

/// Runs `operation`, failing with ``TestClientError/timeout(_:)`` if it takes longer than `seconds`.
func withTimeout<Result: Sendable>(
    _ seconds: Double,
    _ what: String,
    _ operation: @escaping @Sendable () async throws -> Result
) async throws -> Result {
    try await withThrowingTaskGroup(of: Result.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
            throw TestClientError.timeout(what)
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

/// Waits until `condition` holds, checking every 10 ms, for at most `seconds`. For state that has
/// no event to await (such as a connection count); returns whether the condition came true.
@discardableResult
func eventually(timeout seconds: Double = 5, _ condition: @Sendable () -> Bool) async -> Bool {
    let deadline = Deadline(seconds: seconds)
    while !deadline.hasPassed {
        if condition() {
            return true
        }
        try? await Task.sleep(nanoseconds: 10_000_000)
    }
    return condition()
}

/// Fails the test unless `condition` comes true within `seconds`.
func assertEventually(
    timeout seconds: Double = 5,
    _ message: @autoclosure () -> String = "condition did not come true in time",
    file: StaticString = #filePath,
    line: UInt = #line,
    _ condition: @Sendable () -> Bool
) async {
    if !(await eventually(timeout: seconds, condition)) {
        XCTFail(message(), file: file, line: line)
    }
}
