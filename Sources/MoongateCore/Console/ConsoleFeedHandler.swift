import NIOCore
import NIOWebSocket

/// The console page's live feed (`/console/live`): a snapshot on connect and one every second.
/// Viewers only listen; pings are answered and a close is answered before the socket closes,
/// through the same `OutboundGate` as an endpoint's clients.
final class ConsoleFeedHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    static let path = "/console/live"
    static let interval = TimeAmount.seconds(1)

    private let services: HostServices
    private var timer: RepeatedTask?
    private var outbound: OutboundGate?

    init(services: HostServices) {
        self.services = services
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let outbound = OutboundGate(channel: context.channel, joining: false)
        outbound.attach(frames: context)
        self.outbound = outbound
        let loopBoundSelf = NIOLoopBound(self, eventLoop: context.eventLoop)
        let channel = context.channel
        self.timer = context.eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: Self.interval) { _ in
            // A viewer that stops reading is skipped, not buffered for.
            guard channel.isActive, channel.isWritable else { return }
            loopBoundSelf.value.sendSnapshot()
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.timer?.cancel()
    }

    private func sendSnapshot() {
        let text = ConsoleSnapshot(services: self.services).json
        self.outbound?.write(.text(ByteBuffer(string: text)))
        self.outbound?.flush()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = self.unwrapInboundIn(data)
        switch frame.opcode {
        case .ping:
            self.outbound?.write(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData))
            self.outbound?.flush()
        case .connectionClose:
            self.timer?.cancel()
            self.outbound?.peerClosed(payload: frame.unmaskedData)
        default:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.timer?.cancel()
        _ = self.outbound?.socketClosed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension ConsoleFeedHandler: Sendable {}
