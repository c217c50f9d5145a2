package import NIOCore
package import NIOWebSocket

/// A server frame (RFC 6455 5.2: never masked) as the bytes that go on the wire, header and
/// payload in one buffer, so it is written below NIO's frame encoder as one iovec and no
/// `WebSocketFrame` is made for it. The bytes equal what `WebSocketFrameEncoder` writes for the
/// same frame (checked by `ServerFrameTests`).
package enum ServerFrame {
    /// Room a payload may keep before its first byte so that its header is written there, in place.
    package static let headroom = 10

    package static func headerLength(payloadLength: Int) -> Int {
        payloadLength < 126 ? 2 : payloadLength <= Int(UInt16.max) ? 4 : 10
    }

    /// `payload` framed: the header goes into the room before the payload when there is some
    /// (a reply built with `headroom` bytes free at its front), else header and payload are
    /// copied into one new buffer.
    package static func encode(
        _ opcode: WebSocketOpcode,
        payload: consuming ByteBuffer,
        rsv1: Bool = false,
        allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) -> ByteBuffer {
        let length = payload.readableBytes
        let headerLength = Self.headerLength(payloadLength: length)
        if payload.readerIndex >= headerLength {
            var framed = payload
            framed.moveReaderIndex(to: framed.readerIndex - headerLength)
            Self.setHeader(opcode, rsv1: rsv1, payloadLength: length, in: &framed, at: framed.readerIndex)
            return framed
        }
        var framed = allocator.buffer(capacity: headerLength + length)
        framed.moveWriterIndex(forwardBy: headerLength)
        Self.setHeader(opcode, rsv1: rsv1, payloadLength: length, in: &framed, at: 0)
        framed.writeImmutableBuffer(payload)
        return framed
    }

    /// The header alone, for a payload too large to copy: written as a second buffer before it.
    package static func header(_ opcode: WebSocketOpcode, rsv1: Bool = false, payloadLength: Int, allocator: ByteBufferAllocator) -> ByteBuffer {
        let headerLength = Self.headerLength(payloadLength: payloadLength)
        var header = allocator.buffer(capacity: headerLength)
        header.moveWriterIndex(forwardBy: headerLength)
        Self.setHeader(opcode, rsv1: rsv1, payloadLength: payloadLength, in: &header, at: 0)
        return header
    }

    private static func setHeader(_ opcode: WebSocketOpcode, rsv1: Bool, payloadLength: Int, in buffer: inout ByteBuffer, at index: Int) {
        buffer.setInteger(0x80 | (rsv1 ? 0x40 : 0) | UInt8(webSocketOpcode: opcode), at: index)
        switch payloadLength {
        case ..<126:
            buffer.setInteger(UInt8(payloadLength), at: index + 1)
        case ...Int(UInt16.max):
            buffer.setInteger(UInt8(126), at: index + 1)
            buffer.setInteger(UInt16(payloadLength), at: index + 2)
        default:
            buffer.setInteger(UInt8(127), at: index + 1)
            buffer.setInteger(UInt64(payloadLength), at: index + 2)
        }
    }
}

extension ByteBuffer {
    /// An empty buffer with `ServerFrame.headroom` bytes free at its front, to build a message in
    /// that is then framed in place.
    package static func framable(capacity: Int, allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: ServerFrame.headroom + capacity)
        buffer.moveWriterIndex(forwardBy: ServerFrame.headroom)
        buffer.moveReaderIndex(forwardBy: ServerFrame.headroom)
        return buffer
    }
}
