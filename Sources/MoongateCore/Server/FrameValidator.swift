import NIOCore
import NIOWebSocket

/// Rejects frames that RFC 6455 forbids before fragments are joined: reserved bits without a
/// negotiated extension, unmasked client frames, reserved opcodes (``FrameViolation``), and invalid
/// UTF-8 in a fragmented text message as soon as the fragment carrying it arrives, not when the
/// message ends (``InvalidUTF8``). After the first such frame everything is dropped.
final class FrameValidator: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame

    private var failed = false
    /// While a fragmented text message is open: the bytes of a character its next fragment may
    /// complete.
    private var textCarry: [UInt8]?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.failed else { return }
        let frame = self.unwrapInboundIn(data)
        if let violation = FrameViolation(frame) {
            self.failed = true
            context.fireErrorCaught(violation)
            return
        }
        if frame.opcode == .text, !frame.fin {
            self.textCarry = []
        }
        if frame.opcode == .text || frame.opcode == .continuation, let carry = self.textCarry {
            let bytes = carry + frame.unmaskedData.readableBytesView
            let complete = UTF8Check.incompleteTailStart(bytes)
            guard bytes[..<complete].withUnsafeBytes(UTF8Check.isValid), UTF8Check.isValidPrefix(bytes[complete...]) else {
                self.failed = true
                context.fireErrorCaught(InvalidUTF8())
                return
            }
            self.textCarry = frame.fin ? nil : Array(bytes[complete...])
        }
        context.fireChannelRead(data)
    }
}

/// Invalid UTF-8 in a text message, found before the message was complete; answered with 1007.
struct InvalidUTF8: Error {}

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
