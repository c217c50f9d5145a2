import NIOCore

/// The connection's pings and pong deadlines, kept in its I/O loop's `KeepAliveWheel`; what is
/// due is decided by the state machine.
extension WebSocketConnectionHandler: KeepAliveParticipant {
    func startKeepAlive(context: ChannelHandlerContext) {
        self.keepAliveWheel = self.keepAliveWheels.wheel(on: context.eventLoop)
        let first = self.outbound.startKeepAlive(now: .now(), pingEvery: self.pingEvery)
        self.keepAliveWheel?.schedule(self, at: first)
    }

    func stopKeepAlive() {
        self.keepAliveWheel?.cancel(self)
    }

    /// The endpoint's ping interval now (a reload may change it); nil while pings are off.
    private var pingEvery: Double? {
        guard let every = self.connection.slot.binding?.spec.pingEvery, every > 0 else { return nil }
        return every
    }

    func keepAliveDue(now: NIODeadline) {
        guard let spec = self.connection.slot.binding?.spec else { return }
        let step = self.outbound.keepAliveDue(now: now, pingEvery: self.pingEvery, pingTimeout: spec.pingTimeout)
        if step.missedPong {
            self.logger.info("peer did not answer a ping within \(spec.pingTimeout.formattedSeconds): closing", metadata: self.metadata())
            self.connection.slot.metrics.missedPongs.increment()
        }
        if let next = step.next {
            self.keepAliveWheel?.schedule(self, at: next)
        }
    }
}
