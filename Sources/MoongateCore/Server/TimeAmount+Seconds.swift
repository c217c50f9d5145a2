import NIOCore

extension TimeAmount {
    /// Scripts and flags speak in (fractional) seconds. Saturating: `math.huge` is a century (a
    /// script must not be able to trap the host with it), NaN and negatives are zero.
    static func interval(_ value: Double) -> TimeAmount {
        guard value > 0 else { return .zero }
        return .nanoseconds(Int64((min(value, Self.century) * 1e9).rounded()))
    }

    private static let century: Double = 100 * 365 * 86_400
}

extension EventLoopFuture where Value == Void {
    /// Succeeds when this future completes or `timeout` passes, whichever comes first.
    func orTimeout(_ timeout: TimeAmount, on loop: any EventLoop) -> EventLoopFuture<Void> {
        let promise = loop.makePromise(of: Void.self)
        let done = NIOLoopBoundBox.makeBoxSendingValue(false, eventLoop: loop)
        let finish: @Sendable () -> Void = {
            guard !done.value else { return }
            done.value = true
            promise.succeed()
        }
        let timer = loop.scheduleTask(in: timeout, finish)
        self.hop(to: loop).whenComplete { _ in
            timer.cancel()
            finish()
        }
        return promise.futureResult
    }
}
