import NIOCore
import NIOWebSocket

/// Unmasks client frames and rejects frames that RFC 6455 forbids before fragments are joined:
/// reserved bits without a negotiated extension, unmasked client frames, reserved opcodes
/// (``FrameViolation``), and invalid UTF-8 in a fragmented text message as soon as the fragment
/// carrying it arrives, not when the message ends (``InvalidUTF8``). After the first such frame everything is dropped.
///
/// NIO's frame aggregator joins fragments; it is put right after this handler when a client first
/// sends a fragment, so the unfragmented messages of most clients pass one handler fewer.
final class FrameValidator: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame

    private let maxMessageSize: Int
    private var hasAggregator = false
    private var failed = false
    /// While a fragmented text message is open: its UTF-8 state between fragments.
    private var text: StreamingUTF8Validator?

    init(maxMessageSize: Int) {
        self.maxMessageSize = maxMessageSize
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.failed else { return }
        let masked = self.unwrapInboundIn(data)
        if let violation = FrameViolation(masked) {
            self.failed = true
            context.fireErrorCaught(violation)
            return
        }
        // Unmasked once, here; NIO's aggregator and our handler take a frame without a key as is.
        var payload = masked.data
        payload.unmaskWebSocketPayload(masked.maskKey!)
        let frame = WebSocketFrame(fin: masked.fin, opcode: masked.opcode, data: payload)
        if !frame.fin || frame.opcode == .continuation, !self.hasAggregator {
            self.addAggregator(context: context)
        }
        if frame.opcode == .text, !frame.fin {
            self.text = StreamingUTF8Validator()
        }
        if frame.opcode == .text || frame.opcode == .continuation, self.text != nil {
            let valid = payload.withUnsafeReadableBytes { self.text!.feed($0, isFinal: frame.fin) }
            guard valid else {
                self.failed = true
                context.fireErrorCaught(InvalidUTF8())
                return
            }
            if frame.fin {
                self.text = nil
            }
        }
        context.fireChannelRead(self.wrapInboundOut(frame))
    }

    private func addAggregator(context: ChannelHandlerContext) {
        let aggregator = NIOWebSocketFrameAggregator(
            minNonFinalFragmentSize: 0,
            maxAccumulatedFrameCount: Int.max,
            maxAccumulatedFrameSize: self.maxMessageSize
        )
        do {
            try context.pipeline.syncOperations.addHandler(aggregator, position: .after(self))
            self.hasAggregator = true
        } catch {
            // Only a pipeline that is being torn down refuses a handler.
            context.fireErrorCaught(error)
        }
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
