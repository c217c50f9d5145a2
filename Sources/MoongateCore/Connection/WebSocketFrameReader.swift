import NIOCore
import NIOWebSocket

/// Takes complete data messages straight from the socket's bytes, unmasked: the common frame,
/// without a `WebSocketFrame` or a trip through the rest of the pipeline.
protocol UnfragmentedMessageSink: AnyObject {
    /// Returns whether it kept `payload`; if not, the reader reuses its storage for the next
    /// message (a copy kept anyway stays intact: it only costs that message an allocation).
    func receivedMessage(_ opcode: WebSocketOpcode, payload: ByteBuffer) -> Bool
    /// The socket read is over: everything it carried has been delivered, by either path.
    func readComplete()
}

/// A connection's first inbound handler: it turns the socket's bytes into frames. The frame
/// nearly every client sends, a masked, unfragmented text or binary frame without reserved bits
/// of at most `fastPathLimit` bytes outside a fragmented message, is decoded here from the read
/// buffer, unmasked once into a buffer reused from message to message, and handed to `sink` by a
/// direct call. Every other frame goes, byte for byte, to NIO's `WebSocketFrameDecoder`, whose
/// frames (and errors) continue down the pipeline to the validator: NIO's decoder stays the
/// reference, and `FrameReaderEquivalenceTests` feed both the same byte streams.
final class WebSocketFrameReader<Sink: UnfragmentedMessageSink>: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = WebSocketFrame

    static var fastPathLimit: Int { 16 << 10 }
    /// A reused unmasking buffer grown past this is let go rather than kept for the next message.
    private static var keptScratchLimit: Int { 4 << 10 }

    private let sink: Sink
    private let maxFrameSize: Int
    /// Made when a frame first needs it: most connections never send one.
    private lazy var decoder = WebSocketFrameDecoder(maxFrameSize: self.maxFrameSize)
    /// Bytes of a frame that has not arrived whole yet.
    private var buffered: ByteBuffer?
    private var scratch: ByteBuffer?
    /// NIO's decoder has consumed part of a frame: what follows is its, up to that frame's end.
    private var decoderMidFrame = false
    /// A data frame without FIN went to NIO's decoder and its final continuation has not: frames
    /// until then belong to that message (or break it), which the validator and aggregator judge.
    private var inFragmentedMessage = false
    private var failed = false

    init(maxFrameSize: Int, sink: Sink) {
        self.maxFrameSize = maxFrameSize
        self.sink = sink
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.failed else { return }
        var bytes = self.unwrapInboundIn(data)
        if var buffered = self.buffered.take() {
            buffered.writeBuffer(&bytes)
            bytes = buffered
        }
        self.decode(&bytes, context: context)
        if bytes.readableBytes > 0, !self.failed {
            // As NIO's ByteToMessageHandler does: what was decoded is dropped once it is most of
            // the buffer, or the buffer would grow by every read while reads end inside frames.
            if bytes.readerIndex >= 2048 || bytes.readerIndex > bytes.capacity / 2 {
                bytes.discardReadBytes()
            }
            self.buffered = bytes
        }
    }

    /// Bytes held between reads (for tests: they must not grow beyond the frame in progress).
    var bufferedCapacity: Int { self.buffered?.capacity ?? 0 }

    /// Told to the sink directly: the handlers between (the validator, the aggregator) have no
    /// use for it, and each would be one more hop per read.
    func channelReadComplete(context: ChannelHandlerContext) {
        self.sink.readComplete()
    }

    private func decode(_ bytes: inout ByteBuffer, context: ChannelHandlerContext) {
        while !self.failed, bytes.readableBytes > 0 {
            if !self.decoderMidFrame {
                switch self.fastFrame(in: bytes) {
                case .incomplete:
                    return
                case .complete(let opcode, let headerLength, let length):
                    self.deliver(opcode, from: &bytes, headerLength: headerLength, length: length)
                    continue
                case .other(let firstByte):
                    self.noteFragmentation(firstByte)
                }
            }
            let start = bytes.readerIndex
            do {
                switch try self.decoder.decode(context: context, buffer: &bytes) {
                case .continue:
                    self.decoderMidFrame = false
                case .needMoreData:
                    self.decoderMidFrame = self.decoderMidFrame || bytes.readerIndex != start
                    return
                }
            } catch {
                self.failed = true
                self.buffered = nil
                context.fireErrorCaught(error)
            }
        }
    }

    private enum FastFrame {
        /// A frame for the fast path that has not arrived whole.
        case incomplete
        case complete(WebSocketOpcode, headerLength: Int, length: Int)
        /// Not one for the fast path: NIO's decoder takes it.
        case other(firstByte: UInt8)
    }

    private func fastFrame(in bytes: ByteBuffer) -> FastFrame {
        let start = bytes.readerIndex
        guard let first = bytes.getInteger(at: start, as: UInt8.self) else { return .incomplete }
        guard first == 0x81 || first == 0x82, !self.inFragmentedMessage else { return .other(firstByte: first) }
        guard let second = bytes.getInteger(at: start + 1, as: UInt8.self) else { return .incomplete }
        guard second & 0x80 != 0 else { return .other(firstByte: first) }
        let headerLength: Int
        let length: Int
        switch second & 0x7F {
        case 126:
            guard let extended = bytes.getInteger(at: start + 2, as: UInt16.self) else { return .incomplete }
            headerLength = 8
            length = Int(extended)
        case 127:
            return .other(firstByte: first)
        case let short:
            headerLength = 6
            length = Int(short)
        }
        guard length <= Self.fastPathLimit, length <= self.maxFrameSize else { return .other(firstByte: first) }
        guard bytes.readableBytes >= headerLength + length else { return .incomplete }
        return .complete(first == 0x81 ? .text : .binary, headerLength: headerLength, length: length)
    }

    private func deliver(_ opcode: WebSocketOpcode, from bytes: inout ByteBuffer, headerLength: Int, length: Int) {
        var payload: ByteBuffer
        if let scratch = self.scratch.take() {
            payload = scratch
            payload.clear(minimumCapacity: length)
        } else {
            payload = ByteBufferAllocator().buffer(capacity: length)
        }
        bytes.withUnsafeReadableBytes { source in
            let key = (source[headerLength - 4], source[headerLength - 3], source[headerLength - 2], source[headerLength - 1])
            let masked = UnsafeRawBufferPointer(rebasing: source[headerLength..<(headerLength + length)])
            payload.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { target in
                Unmasking.unmask(masked, key: key, into: target)
                return length
            }
        }
        bytes.moveReaderIndex(forwardBy: headerLength + length)
        let kept = self.sink.receivedMessage(opcode, payload: payload)
        if !kept, payload.capacity <= Self.keptScratchLimit {
            self.scratch = payload
        }
    }

    /// Follows whether a fragmented message is open, from the first byte of each frame NIO's
    /// decoder is given: its final frame is a continuation with FIN.
    private func noteFragmentation(_ firstByte: UInt8) {
        let fin = firstByte & 0x80 != 0
        switch firstByte & 0x0F {
        case 0x1, 0x2: self.inFragmentedMessage = !fin
        case 0x0 where fin: self.inFragmentedMessage = false
        default: break
        }
    }
}

@available(*, unavailable)
extension WebSocketFrameReader: Sendable {}
