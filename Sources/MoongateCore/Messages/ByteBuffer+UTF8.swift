import NIOCore

extension ByteBuffer {
    /// Whether the readable bytes are valid UTF-8.
    var isValidUTF8: Bool {
        self.withUnsafeReadableBytes(UTF8Check.isValid)
    }
}

enum UTF8Check {
    /// Whether `bytes` are valid UTF-8. Pure ASCII, the common case for JSON, is confirmed eight
    /// bytes at a time without building a String.
    static func isValid(_ bytes: UnsafeRawBufferPointer) -> Bool {
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

    /// Where a sequence that the next fragment may still complete begins (`bytes.count` if none):
    /// the last lead byte, if fewer of its continuation bytes follow it than it announces.
    static func incompleteTailStart(_ bytes: [UInt8]) -> Int {
        for back in 1...min(3, max(1, bytes.count)) where back <= bytes.count {
            let byte = bytes[bytes.count - back]
            if byte & 0xC0 == 0x80 { continue }
            let length = byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : byte >= 0xC0 ? 2 : 1
            return length > back ? bytes.count - back : bytes.count
        }
        return bytes.count
    }

    /// Whether the unfinished sequence `tail` (a lead byte and fewer continuation bytes than it
    /// announces) can still become a valid character: fails fast on `F4 90`, say, which never can.
    static func isValidPrefix(_ tail: ArraySlice<UInt8>) -> Bool {
        guard let lead = tail.first else { return true }
        let second: ClosedRange<UInt8>
        switch lead {
        case 0xC2...0xDF, 0xE1...0xEC, 0xEE...0xEF, 0xF1...0xF3: second = 0x80...0xBF
        case 0xE0: second = 0xA0...0xBF
        case 0xED: second = 0x80...0x9F
        case 0xF0: second = 0x90...0xBF
        case 0xF4: second = 0x80...0x8F
        default: return false
        }
        for (offset, byte) in tail.dropFirst().enumerated() {
            guard (offset == 0 ? second : 0x80...0xBF).contains(byte) else { return false }
        }
        return true
    }
}
