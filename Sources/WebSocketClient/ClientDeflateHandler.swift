import NIOCore
import NIOWebSocket
import WebSocketDeflate

/// permessage-deflate on the client side, once the server agreed to it without context takeover
/// in either direction: compressed messages from the server (RSV1 on the first frame) are
/// inflated whole, and the client's own text and binary messages go compressed.
final class ClientDeflateHandler: ChannelDuplexHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    /// The header that offers it: the host this client talks to answers in kind.
    static let offer = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    static let maxMessageSize = 1 << 24

    private var compressed = CompressedMessage(limit: ClientDeflateHandler.maxMessageSize)

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = self.unwrapInboundIn(data)
        guard frame.rsv1 || (self.compressed.isOpen && frame.opcode == .continuation) else {
            context.fireChannelRead(data)
            return
        }
        do {
            if let message = try self.compressed.add(frame.unmaskedData, opcode: frame.opcode, fin: frame.fin) {
                context.fireChannelRead(self.wrapInboundOut(message))
            }
        } catch {
            context.fireErrorCaught(error)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let frame = self.unwrapOutboundIn(data)
        guard frame.fin, !frame.rsv1, frame.opcode == .text || frame.opcode == .binary,
            let payload = MessageDeflate.compress(frame.data, windowBits: 15)
        else {
            context.write(data, promise: promise)
            return
        }
        let compressed = WebSocketFrame(fin: true, rsv1: true, opcode: frame.opcode, maskKey: frame.maskKey, data: payload)
        context.write(self.wrapOutboundOut(compressed), promise: promise)
    }
}

@available(*, unavailable)
extension ClientDeflateHandler: Sendable {}
