import NIOCore
import NIOWebSocket

extension ByteBuffer {
    /// XORs the readable bytes with a client's masking key (RFC 6455 5.3), eight bytes at a time.
    /// NIO's `webSocketUnmask` goes byte by byte through a generic loop, which in a debug build
    /// held an event loop for over a second on one 16 MiB message (Autobahn 9.1.6), stalling every
    /// other connection on that loop.
    mutating func unmaskWebSocketPayload(_ key: WebSocketMaskingKey) {
        let pattern = withUnsafeBytes(of: (key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3])) {
            $0.loadUnaligned(as: UInt64.self)
        }
        self.withUnsafeMutableReadableBytes { bytes in
            let count = bytes.count
            var index = 0
            while index + 8 <= count {
                let word = bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self)
                bytes.storeBytes(of: word ^ pattern, toByteOffset: index, as: UInt64.self)
                index += 8
            }
            while index < count {
                bytes[index] ^= key[index & 3]
                index += 1
            }
        }
    }
}
