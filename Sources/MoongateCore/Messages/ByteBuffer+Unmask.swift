import NIOCore
import NIOWebSocket

extension ByteBuffer {
    /// XORs the readable bytes with a client's masking key (RFC 6455 5.3), in place.
    mutating func unmaskWebSocketPayload(_ key: WebSocketMaskingKey) {
        self.withUnsafeMutableReadableBytes { bytes in
            Unmasking.unmask(UnsafeRawBufferPointer(bytes), key: (key[0], key[1], key[2], key[3]), into: bytes)
        }
    }
}

/// NIO's `webSocketUnmask` goes byte by byte through a generic loop, which in a debug build held an
/// event loop for over a second on one 16 MiB message (Autobahn 9.1.6), stalling every other
/// connection on that loop; this goes eight bytes at a time.
enum Unmasking {
    /// Writes `source` XORed with `key` to `target` (at least as long; it may be `source` itself).
    static func unmask(_ source: UnsafeRawBufferPointer, key: (UInt8, UInt8, UInt8, UInt8), into target: UnsafeMutableRawBufferPointer) {
        let pattern = withUnsafeBytes(of: (key.0, key.1, key.2, key.3, key.0, key.1, key.2, key.3)) {
            $0.loadUnaligned(as: UInt64.self)
        }
        let count = source.count
        var index = 0
        while index + 8 <= count {
            let word = source.loadUnaligned(fromByteOffset: index, as: UInt64.self)
            target.storeBytes(of: word ^ pattern, toByteOffset: index, as: UInt64.self)
            index += 8
        }
        while index < count {
            // Byte `index & 7` of the pattern as it lies in memory.
            target[index] = source[index] ^ UInt8(truncatingIfNeeded: pattern.littleEndian >> (UInt64(index & 7) * 8))
            index += 1
        }
    }
}
