import NIOCore

extension TimeAmount {
    /// Scripts and flags speak in (fractional) seconds.
    static func interval(_ value: Double) -> TimeAmount {
        .nanoseconds(Int64((value * 1e9).rounded()))
    }
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
