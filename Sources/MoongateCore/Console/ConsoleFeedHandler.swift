import NIOCore
import NIOWebSocket

/// The console page's live feed (`/console/live`): a snapshot on connect and one every second.
/// Viewers only listen; pings are answered and a close is returned before the socket closes.
final class ConsoleFeedHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    static let path = "/console/live"
    static let interval = TimeAmount.seconds(1)

    private let services: HostServices
    private var timer: RepeatedTask?

    init(services: HostServices) {
        self.services = services
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let loopBoundContext = context.loopBound
        let loopBoundSelf = NIOLoopBound(self, eventLoop: context.eventLoop)
        self.timer = context.eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: Self.interval) { _ in
            loopBoundSelf.value.sendSnapshot(context: loopBoundContext.value)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.timer?.cancel()
    }

    private func sendSnapshot(context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        // A viewer that stops reading is skipped, not buffered for.
        guard context.channel.isWritable else { return }
        let text = ConsoleSnapshot(services: self.services).json
        context.writeAndFlush(self.wrapOutboundOut(.text(ByteBuffer(string: text))), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = self.unwrapInboundIn(data)
        switch frame.opcode {
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)
            context.writeAndFlush(self.wrapOutboundOut(pong), promise: nil)
        case .connectionClose:
            self.timer?.cancel()
            var payload = frame.unmaskedData
            var reply = context.channel.allocator.buffer(capacity: 2)
            if let code = payload.readInteger(as: UInt16.self) {
                reply.writeInteger(code)
            }
            let close = WebSocketFrame(fin: true, opcode: .connectionClose, data: reply)
            let loopBoundContext = context.loopBound
            context.writeAndFlush(self.wrapOutboundOut(close)).whenComplete { _ in
                loopBoundContext.value.close(promise: nil)
            }
        default:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension ConsoleFeedHandler: Sendable {}
