package import NIOCore
package import NIOWebSocket

/// The frames of one compressed message (RSV1 on the first), collected until the last and then
/// inflated whole: what the host does with a client's messages and a client with the host's.
package struct CompressedMessage {
    private var open: (opcode: WebSocketOpcode, payload: ByteBuffer)?
    private let limit: Int

    /// `limit`: the most the message may inflate to.
    package init(limit: Int) {
        self.limit = limit
    }

    /// Whether a message's first frame has come and its last has not.
    package var isOpen: Bool { self.open != nil }

    /// Takes the next frame's unmasked payload; the inflated message once the last frame is in.
    package mutating func add(_ payload: ByteBuffer, opcode: WebSocketOpcode, fin: Bool) throws(MessageDeflate.InflateFailure) -> WebSocketFrame? {
        var message = self.open ?? (opcode, ByteBuffer())
        if fin, message.payload.readableBytes == 0 {
            message.payload = payload  // the common case, one frame: no copy
        } else {
            var payload = payload
            message.payload.writeBuffer(&payload)
        }
        // Compressed, a message is hardly ever larger than itself: far past the limit already, it is too large.
        guard message.payload.readableBytes <= MessageDeflate.compressedLimit(self.limit) else {
            self.open = nil
            throw .tooLarge
        }
        guard fin else {
            self.open = message
            return nil
        }
        self.open = nil
        let inflated = try MessageDeflate.inflate(message.payload, limit: self.limit)
        return WebSocketFrame(fin: true, opcode: message.opcode, data: inflated)
    }
}
