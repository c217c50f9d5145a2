import WebSocketClient
import NIOCore
import NIOWebSocket

/// The interactive client's connection: prints what arrives, reports how it closed.
enum ClientConnection {
    static func open(
        _ target: WebSocketTarget,
        group: any EventLoopGroup,
        printer: MessagePrinter,
        closed: EventLoopPromise<UInt16?>
    ) -> EventLoopFuture<any Channel> {
        WebSocketDial.open(target, on: closed.futureResult.eventLoop) { upgraded in
            PrintingHandler(printer: printer, upgraded: upgraded, closed: closed)
        }.flatMapErrorThrowing { error in
            closed.succeed(nil)
            throw error
        }
    }
}

final class PrintingHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let printer: MessagePrinter
    private let upgraded: EventLoopPromise<Void>
    private let closed: EventLoopPromise<UInt16?>
    private var closeCode: UInt16?

    init(printer: MessagePrinter, upgraded: EventLoopPromise<Void>, closed: EventLoopPromise<UInt16?>) {
        self.printer = printer
        self.upgraded = upgraded
        self.closed = closed
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.upgraded.succeed()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = self.unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            self.printer.text(String(buffer: frame.data))
        case .binary:
            self.printer.binary(frame.data.readableBytes)
        case .ping:
            context.writeAndFlush(self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.data)), promise: nil)
        case .connectionClose:
            var payload = frame.data
            self.closeCode = payload.readInteger(as: UInt16.self)
            let reason = payload.readString(length: payload.readableBytes) ?? ""
            if !reason.isEmpty {
                self.printer.note("server closed: \(reason)")
            }
            // Answer the close, then let the socket go.
            var answer = ByteBuffer()
            answer.writeInteger(self.closeCode ?? 1000)
            let loopBoundContext = context.loopBound
            context.writeAndFlush(self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: answer)))
                .whenComplete { _ in loopBoundContext.value.close(promise: nil) }
        default:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.closed.succeed(self.closeCode)
        context.fireChannelInactive()
    }
}

@available(*, unavailable)
extension PrintingHandler: Sendable {}
