import NIOCore

extension ByteBuffer {
    /// Whether the readable bytes are valid UTF-8. Pure ASCII, the common case for JSON, is
    /// confirmed eight bytes at a time without building a String.
    var isValidUTF8: Bool {
        self.withUnsafeReadableBytes { bytes in
            var index = 0
            let count = bytes.count
            while index + 8 <= count {
                if bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self) & 0x8080_8080_8080_8080 != 0 {
                    return String(validating: bytes, as: UTF8.self) != nil
                }
                index += 8
            }
            while index < count {
                if bytes[index] >= 0x80 {
                    return String(validating: bytes, as: UTF8.self) != nil
                }
                index += 1
            }
            return true
        }
    }
}
