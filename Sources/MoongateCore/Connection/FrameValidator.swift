import NIOCore
import NIOWebSocket
import WebSocketDeflate

/// Unmasks client frames and rejects frames that RFC 6455 forbids before fragments are joined:
/// reserved bits without a negotiated extension, unmasked client frames, reserved opcodes
/// (``FrameViolation``), and invalid UTF-8 in a fragmented text message as soon as the fragment
/// carrying it arrives, not when the message ends (``InvalidUTF8``). After the first such frame everything is dropped.
///
/// With permessage-deflate negotiated, a message whose first frame has RSV1 set is compressed:
/// its fragments are collected here and inflated as one, at most `maxMessageSize` bytes of it
/// (a deflate bomb stops there, 1009), and passed on as one unfragmented frame.
///
/// NIO's frame aggregator joins the fragments of uncompressed messages; it is put right after this
/// handler when a client first sends one. The common frame (masked, unfragmented, uncompressed,
/// up to 16 KiB) never reaches this handler: `WebSocketFrameReader` hands it to the connection
/// handler directly.
final class FrameValidator: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame

    private let maxMessageSize: Int
    private let deflate: Bool
    private var hasAggregator = false
    private var failed = false
    /// While a fragmented text message is open: its UTF-8 state between fragments.
    private var text: StreamingUTF8Validator?
    /// The compressed message whose fragments are arriving, if any.
    private var compressed: CompressedMessage

    init(maxMessageSize: Int, deflate: Bool = false) {
        self.maxMessageSize = maxMessageSize
        self.deflate = deflate
        self.compressed = CompressedMessage(limit: maxMessageSize)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.failed else { return }
        let masked = self.unwrapInboundIn(data)
        if let violation = FrameViolation(masked, deflate: self.deflate, inCompressedMessage: self.compressed.isOpen) {
            return self.fail(violation, context: context)
        }
        // Unmasked once, here; NIO's aggregator and our handler take a frame without a key as is.
        var payload = masked.data
        payload.unmaskWebSocketPayload(masked.maskKey!)
        if masked.rsv1 || (self.compressed.isOpen && masked.opcode == .continuation) {
            do {
                if let message = try self.compressed.add(payload, opcode: masked.opcode, fin: masked.fin) {
                    context.fireChannelRead(self.wrapInboundOut(message))
                }
            } catch {
                self.fail(error, context: context)
            }
            return
        }
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
                return self.fail(InvalidUTF8(), context: context)
            }
            if frame.fin {
                self.text = nil
            }
        }
        context.fireChannelRead(self.wrapInboundOut(frame))
    }

    private func fail(_ error: any Error, context: ChannelHandlerContext) {
        self.failed = true
        context.fireErrorCaught(error)
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

    /// `deflate`: permessage-deflate was negotiated, so RSV1 may mark the first frame of a data
    /// message as compressed (RFC 7692 §6), and only that frame.
    init?(_ frame: WebSocketFrame, deflate: Bool = false, inCompressedMessage: Bool = false) {
        if frame.rsv2 || frame.rsv3 || (frame.rsv1 && !deflate) {
            self.description = "reserved bits set without a negotiated extension"
        } else if frame.rsv1, frame.opcode != .text && frame.opcode != .binary {
            self.description = "RSV1 set on a frame that does not start a data message"
        } else if frame.maskKey == nil {
            self.description = "client frames must be masked"
        } else if inCompressedMessage, frame.opcode == .text || frame.opcode == .binary {
            self.description = "a new message began before the compressed one ended"
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
