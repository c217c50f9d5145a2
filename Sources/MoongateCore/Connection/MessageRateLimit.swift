import NIOCore

/// A token bucket: `perSecond` messages a second, in bursts of up to one second's worth.
struct MessageRateLimit {
    private let perSecond: Double
    private var tokens: Double
    private var refilledAt: NIODeadline?

    init(perSecond: Double) {
        self.perSecond = perSecond
        self.tokens = perSecond
    }

    mutating func admit(now: NIODeadline) -> Bool {
        if let refilledAt = self.refilledAt {
            let elapsed = Double((now - refilledAt).nanoseconds) / 1e9
            self.tokens = min(self.perSecond, self.tokens + elapsed * self.perSecond)
        }
        self.refilledAt = now
        guard self.tokens >= 1 else { return false }
        self.tokens -= 1
        return true
    }
}
