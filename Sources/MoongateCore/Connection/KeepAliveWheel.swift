import NIOCore

/// Something with keep-alive deadlines on one I/O loop: a WebSocket connection's handler.
protocol KeepAliveParticipant: AnyObject {
    /// The wheel's bookkeeping: the slot the participant waits in, if any. Only the wheel sets it.
    var keepAliveSlot: Int? { get set }
    /// Called on the loop once the time the participant last asked for has come.
    func keepAliveDue(now: NIODeadline)
}

/// One timer for every connection's keep-alive on an I/O loop, instead of a scheduled task per
/// connection: a hashed wheel of `slotCount` slots, one per `tick`. A participant is in at most
/// one slot; a deadline further away than one turn waits for its turn to come round. The timer
/// runs only while the wheel holds someone. Confined to its loop.
final class KeepAliveWheel {
    static let tick: TimeAmount = .milliseconds(50)
    static let slotCount = 1024

    private let loop: any EventLoop
    private var slots: [[ObjectIdentifier: (participant: any KeepAliveParticipant, dueTick: Int64)]]
    private(set) var count = 0
    private let origin: NIODeadline
    /// The last tick whose slot has been processed.
    private var processedTick: Int64
    private var timer: RepeatedTask?
    /// The clock; tests pass their own.
    private let now: () -> NIODeadline

    init(loop: any EventLoop, now: @escaping () -> NIODeadline = { .now() }) {
        self.loop = loop
        self.now = now
        self.slots = Array(repeating: [:], count: Self.slotCount)
        self.origin = now()
        self.processedTick = 0
    }

    /// Entries the slots have room for (what they hold plus what they keep allocated).
    var storedCapacity: Int { self.slots.reduce(0) { $0 + $1.capacity } }

    /// Calls `participant.keepAliveDue` at the first tick at or after `deadline`, replacing
    /// whatever it asked for before.
    func schedule(_ participant: any KeepAliveParticipant, at deadline: NIODeadline) {
        self.unlink(participant)
        if self.timer == nil {
            // Empty until now: nothing is waiting in the ticks the wheel has not processed.
            self.processedTick = self.tick(at: self.now())
            self.startTimer()
        }
        let dueTick = max(self.processedTick + 1, self.tick(at: deadline, roundingUp: true))
        let slot = Int(dueTick % Int64(Self.slotCount))
        self.slots[slot][ObjectIdentifier(participant)] = (participant, dueTick)
        participant.keepAliveSlot = slot
        self.count += 1
    }

    private func tick(at time: NIODeadline, roundingUp: Bool = false) -> Int64 {
        let elapsed = (time - self.origin).nanoseconds
        return (elapsed + (roundingUp ? Self.tick.nanoseconds - 1 : 0)) / Self.tick.nanoseconds
    }

    func cancel(_ participant: any KeepAliveParticipant) {
        self.unlink(participant)
        if self.count == 0 {
            self.timer?.cancel()
            self.timer = nil
        }
    }

    private func unlink(_ participant: any KeepAliveParticipant) {
        guard let slot = participant.keepAliveSlot else { return }
        self.slots[slot][ObjectIdentifier(participant)] = nil
        if self.slots[slot].isEmpty {
            // A dictionary keeps its storage when entries leave: give back what a crowd needed.
            self.slots[slot] = [:]
        }
        participant.keepAliveSlot = nil
        self.count -= 1
    }

    private func startTimer() {
        let loopBound = NIOLoopBound(self, eventLoop: self.loop)
        self.timer = self.loop.scheduleRepeatedTask(initialDelay: Self.tick, delay: Self.tick) { _ in
            let wheel = loopBound.value
            wheel.advance(to: wheel.now())
        }
    }

    /// Processes every tick up to `now`, catching up if the loop was busy.
    private func advance(to now: NIODeadline) {
        let nowTick = self.tick(at: now)
        // Behind by more than a turn: every slot is visited once, with its due entries.
        let first = max(self.processedTick + 1, nowTick - Int64(Self.slotCount) + 1)
        guard first <= nowTick else { return }
        var due: [any KeepAliveParticipant] = []
        for tick in first...nowTick {
            let slot = Int(tick % Int64(Self.slotCount))
            guard !self.slots[slot].isEmpty else { continue }
            // Taken out of the wheel and rebuilt from the entries that wait for a later turn:
            // removing from the slot while iterating it would copy its storage, and a dictionary
            // never shrinks, so every slot would keep room for the most participants it ever held.
            let waiting = self.slots[slot]
            self.slots[slot] = [:]
            for (key, entry) in waiting {
                if entry.dueTick <= nowTick {
                    entry.participant.keepAliveSlot = nil
                    self.count -= 1
                    due.append(entry.participant)
                } else {
                    self.slots[slot][key] = entry
                }
            }
        }
        self.processedTick = nowTick
        for participant in due {
            participant.keepAliveDue(now: now)
        }
        if self.count == 0 {
            self.timer?.cancel()
            self.timer = nil
        }
    }
}

@available(*, unavailable)
extension KeepAliveWheel: Sendable {}

/// A keep-alive wheel for each I/O loop.
final class KeepAliveWheels: Sendable {
    private let wheels: PerLoop<KeepAliveWheel>

    init(loops: [any EventLoop]) {
        self.wheels = PerLoop(loops: loops) { KeepAliveWheel(loop: $0) }
    }

    /// The wheel of `loop`; must be called on `loop`. Nil for a loop the host does not serve on.
    func wheel(on loop: any EventLoop) -> KeepAliveWheel? {
        self.wheels.box(on: loop)?.value
    }
}
