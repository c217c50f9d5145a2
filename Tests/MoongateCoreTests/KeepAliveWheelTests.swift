import NIOCore
import NIOEmbedded
import XCTest

@testable import MoongateCore

/// The keep-alive wheel alone, on an embedded loop with a test clock: who is called when, and
/// that slots give back the storage a crowd of connections needed.
final class KeepAliveWheelTests: XCTestCase {
    private final class Clock {
        var now = NIODeadline.uptimeNanoseconds(1_000_000_000)
    }

    private final class Probe: KeepAliveParticipant {
        var keepAliveSlot: Int?
        var calls: [NIODeadline] = []
        func keepAliveDue(now: NIODeadline) { self.calls.append(now) }
    }

    private let loop = EmbeddedEventLoop()
    private let clock = Clock()
    private lazy var wheel = KeepAliveWheel(loop: self.loop, now: { [clock] in clock.now })

    /// Moves the clock and the loop on together, one wheel tick at a time.
    private func advance(by amount: TimeAmount) {
        var left = amount.nanoseconds
        while left > 0 {
            let step = min(left, KeepAliveWheel.tick.nanoseconds)
            self.clock.now = self.clock.now + .nanoseconds(step)
            self.loop.advanceTime(by: .nanoseconds(step))
            left -= step
        }
    }

    func testEachParticipantIsCalledOnceAtItsDeadline() {
        let early = Probe()
        let late = Probe()
        let start = self.clock.now
        self.wheel.schedule(early, at: start + .milliseconds(500))
        self.wheel.schedule(late, at: start + .seconds(2))
        self.advance(by: .milliseconds(450))
        XCTAssertEqual(early.calls, [])
        self.advance(by: .milliseconds(100))
        XCTAssertEqual(early.calls.count, 1)
        XCTAssertGreaterThanOrEqual(early.calls[0], start + .milliseconds(500))
        XCTAssertEqual(late.calls, [])
        self.advance(by: .seconds(2))
        XCTAssertEqual(early.calls.count, 1)
        XCTAssertEqual(late.calls.count, 1)
        XCTAssertEqual(self.wheel.count, 0)
    }

    func testSchedulingAgainReplacesTheEarlierDeadline() {
        let probe = Probe()
        let start = self.clock.now
        self.wheel.schedule(probe, at: start + .milliseconds(200))
        self.wheel.schedule(probe, at: start + .seconds(1))
        XCTAssertEqual(self.wheel.count, 1)
        self.advance(by: .milliseconds(500))
        XCTAssertEqual(probe.calls, [])
        self.advance(by: .milliseconds(600))
        XCTAssertEqual(probe.calls.count, 1)
    }

    func testADeadlineMoreThanOneTurnAwayWaitsForItsTurn() {
        let turn = KeepAliveWheel.tick * Int64(KeepAliveWheel.slotCount)
        let far = Probe()
        let neighbour = Probe()
        let start = self.clock.now
        self.wheel.schedule(far, at: start + turn + .seconds(5))
        // Shares the far one's slot, one turn earlier: its visit must keep the far one waiting.
        self.wheel.schedule(neighbour, at: start + .seconds(5))
        self.advance(by: .seconds(6))
        XCTAssertEqual(neighbour.calls.count, 1)
        XCTAssertEqual(far.calls, [])
        self.advance(by: turn - .seconds(2))
        XCTAssertEqual(far.calls, [])
        self.advance(by: .seconds(2))
        XCTAssertEqual(far.calls.count, 1)
        XCTAssertGreaterThanOrEqual(far.calls[0], start + turn + .seconds(5))
    }

    func testACrowdThatWasDueLeavesNoStorageBehind() {
        let crowd = (0..<2000).map { _ in Probe() }
        let start = self.clock.now
        for probe in crowd {
            self.wheel.schedule(probe, at: start + .seconds(1))
        }
        XCTAssertGreaterThanOrEqual(self.wheel.storedCapacity, crowd.count)
        self.advance(by: .milliseconds(1100))
        XCTAssertTrue(crowd.allSatisfy { $0.calls.count == 1 })
        // A dictionary keeps its storage when entries leave: the slot must have been replaced.
        XCTAssertEqual(self.wheel.storedCapacity, 0)
    }

    func testACrowdMovingRoundTheWheelNeedsStorageForItselfOnly() {
        let crowd = (0..<1000).map { _ in Probe() }
        for _ in 0..<40 {
            // Everyone due together, again and again, one tick further each time: as connections
            // that connected together are pinged together.
            let deadline = self.clock.now + .milliseconds(100)
            for probe in crowd {
                self.wheel.schedule(probe, at: deadline)
            }
            self.advance(by: .milliseconds(150))
        }
        XCTAssertTrue(crowd.allSatisfy { $0.calls.count == 40 })
        XCTAssertEqual(self.wheel.storedCapacity, 0)
    }

    func testCancelledParticipantsGiveBackTheirSlotsStorage() {
        let crowd = (0..<2000).map { _ in Probe() }
        for probe in crowd {
            self.wheel.schedule(probe, at: self.clock.now + .seconds(3))
        }
        for probe in crowd {
            self.wheel.cancel(probe)
        }
        XCTAssertEqual(self.wheel.count, 0)
        XCTAssertEqual(self.wheel.storedCapacity, 0)
        self.advance(by: .seconds(4))
        XCTAssertTrue(crowd.allSatisfy { $0.calls.isEmpty })
    }
}
