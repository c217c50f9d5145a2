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

    /// How many bytes the character that `lead` begins takes (1 for a byte that cannot lead).
    static func sequenceLength(_ lead: UInt8) -> Int {
        lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1
    }

    /// Where a sequence that the next fragment may still complete begins (`bytes.endIndex` if
    /// none): the last lead byte, if fewer of its continuation bytes follow it than it announces.
    static func incompleteTailStart<Bytes: BidirectionalCollection<UInt8>>(_ bytes: Bytes) -> Bytes.Index {
        var index = bytes.endIndex
        var back = 0
        while index != bytes.startIndex, back < 3 {
            bytes.formIndex(before: &index)
            back += 1
            let byte = bytes[index]
            if byte & 0xC0 == 0x80 { continue }
            return self.sequenceLength(byte) > back ? index : bytes.endIndex
        }
        return bytes.endIndex
    }

    /// Whether the unfinished sequence `tail` (a lead byte and fewer continuation bytes than it
    /// announces) can still become a valid character: fails fast on `F4 90`, say, which never can.
    static func isValidPrefix<Bytes: Collection<UInt8>>(_ tail: Bytes) -> Bool {
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

/// Validates a text message fragment by fragment, so invalid UTF-8 is found in the fragment that
/// carries it. Only a character split across fragments (at most three bytes) is kept between calls.
struct StreamingUTF8Validator {
    private var carry: [UInt8] = []

    /// Whether everything fed so far is valid UTF-8 or a prefix of it; with `isFinal`, whether
    /// the whole message is valid.
    mutating func feed(_ bytes: UnsafeRawBufferPointer, isFinal: Bool) -> Bool {
        var start = 0
        if let lead = self.carry.first {
            let missing = UTF8Check.sequenceLength(lead) - self.carry.count
            start = min(missing, bytes.count)
            self.carry.append(contentsOf: bytes[0..<start])
            if start < missing {
                return !isFinal && UTF8Check.isValidPrefix(self.carry)
            }
            guard self.carry.withUnsafeBytes(UTF8Check.isValid) else { return false }
            self.carry.removeAll(keepingCapacity: true)
        }
        let rest = UnsafeRawBufferPointer(rebasing: bytes[start...])
        let unfinished = UTF8Check.incompleteTailStart(rest)
        guard UTF8Check.isValid(UnsafeRawBufferPointer(rebasing: rest[..<unfinished])),
            UTF8Check.isValidPrefix(rest[unfinished...])
        else { return false }
        if isFinal {
            return unfinished == rest.endIndex
        }
        self.carry.append(contentsOf: rest[unfinished...])
        return true
    }
}
