import NIOCore
import NIOWebSocket

/// Rejects frames that RFC 6455 forbids before fragments are joined: reserved bits without a
/// negotiated extension, unmasked client frames, reserved opcodes. The first bad frame raises a
/// ``FrameViolation`` and everything after it is dropped.
final class FrameValidator: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame

    private var failed = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.failed else { return }
        let frame = self.unwrapInboundIn(data)
        if let violation = FrameViolation(frame) {
            self.failed = true
            context.fireErrorCaught(violation)
            return
        }
        context.fireChannelRead(data)
    }
}

/// A frame no conforming client sends; answered with close 1002.
struct FrameViolation: Error, Equatable, CustomStringConvertible {
    let description: String

    init?(_ frame: WebSocketFrame) {
        if frame.rsv1 || frame.rsv2 || frame.rsv3 {
            self.description = "reserved bits set without a negotiated extension"
        } else if frame.maskKey == nil {
            self.description = "client frames must be masked"
        } else {
            switch frame.opcode {
            case .continuation, .text, .binary, .connectionClose, .ping, .pong:
                return nil
            default:
                self.description = "reserved opcode \(frame.opcode)"
            }
        }
    }
}

@available(*, unavailable)
extension FrameValidator: Sendable {}
