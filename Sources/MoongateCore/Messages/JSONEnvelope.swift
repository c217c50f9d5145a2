import Foundation

/// What the host needs to know about a JSON text message without decoding it: whether it is valid
/// JSON, whether it is an object, its top-level `"type"` and the exact bytes of its top-level `"id"`.
/// One validating pass over the bytes (RFC 8259), no allocation but the type's string. This lets
/// the I/O loop answer a message no script handler wants with the default ack, and copy the id
/// byte for byte, whatever its size or form.
struct JSONEnvelope: Equatable {
    enum TypeField: Equatable {
        case absent
        case string(String)
        /// Not a plain string (escapes, a number, ...): only the script can say what it means.
        case other
    }

    var type: TypeField = .absent
    /// Byte ranges of the `"id"`, `"seq"`, `"last_seq"` and `"epoch"` values in the scanned text.
    var id: Range<Int>?
    var seq: Range<Int>?
    var lastSeq: Range<Int>?
    var epoch: Range<Int>?
    /// A top-level key used escapes, so key matching needs the full decoder.
    var hasEscapedKeys = false

    enum Outcome: Equatable {
        case object(JSONEnvelope)
        case notAnObject
        case invalid(String)
    }

    static let maximumDepth = 512

    static func scan(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        var scanner = Scanner(bytes: bytes)
        do throws(Scanner.Failure) {
            scanner.skipWhitespace()
            let isObject = scanner.peek() == UInt8(ascii: "{")
            var envelope = JSONEnvelope()
            if isObject {
                try scanner.scanTopLevelObject(into: &envelope)
            } else {
                try scanner.scanValue(depth: 0)
            }
            scanner.skipWhitespace()
            guard scanner.isAtEnd else { throw Scanner.Failure("unexpected data after the JSON value", at: scanner.index) }
            return isObject ? .object(envelope) : .notAnObject
        } catch {
            return .invalid(error.description)
        }
    }
}

extension JSONEnvelope {
    /// The high bit of every byte of `word` (byte 0 in its lowest bits) that may be `"`, `\` or
    /// below 0x20: zero exactly when there is none, and its lowest bit set is the first such byte
    /// (the bit tricks that find a zero byte, or one below n, can mark more bytes only above it).
    /// Bytes from 0x80 up are never marked.
    static func specialStringBytes(_ word: UInt64) -> UInt64 {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        func bytesBelow(_ value: UInt64, _ limit: UInt64) -> UInt64 { (value &- ones &* limit) & ~value & highs }
        return bytesBelow(word ^ (ones &* 0x22), 1) | bytesBelow(word ^ (ones &* 0x5C), 1) | bytesBelow(word, 0x20)
    }

    /// The byte ranges of the elements of a top-level JSON array, or nil if `bytes` is not one.
    static func arrayElements(_ bytes: UnsafeRawBufferPointer) -> Result<[Range<Int>], ScanFailure> {
        var scanner = Scanner(bytes: bytes)
        do throws(Scanner.Failure) {
            var ranges: [Range<Int>] = []
            scanner.skipWhitespace()
            try scanner.expect(UInt8(ascii: "["), "'['")
            scanner.skipWhitespace()
            if scanner.peek() == UInt8(ascii: "]") {
                scanner.index += 1
            } else {
                while true {
                    scanner.skipWhitespace()
                    let start = scanner.index
                    try scanner.scanValue(depth: 1)
                    ranges.append(start..<scanner.index)
                    scanner.skipWhitespace()
                    guard let byte = scanner.peek() else { throw Scanner.Failure("unexpected end of text", at: scanner.index) }
                    scanner.index += 1
                    if byte == UInt8(ascii: "]") { break }
                    guard byte == UInt8(ascii: ",") else { throw Scanner.Failure("expected ',' or ']'", at: scanner.index - 1) }
                }
            }
            scanner.skipWhitespace()
            guard scanner.isAtEnd else { throw Scanner.Failure("unexpected data after the JSON value", at: scanner.index) }
            return .success(ranges)
        } catch {
            return .failure(ScanFailure(description: error.description))
        }
    }

    struct ScanFailure: Error {
        let description: String
    }
}

private struct Scanner {
    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ what: String, at index: Int) {
            self.description = "\(what) at byte \(index + 1)"
        }
    }

    let bytes: UnsafeRawBufferPointer
    var index = 0

    init(bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    var isAtEnd: Bool { self.index >= self.bytes.count }

    func peek() -> UInt8? { self.isAtEnd ? nil : self.bytes[self.index] }

    mutating func skipWhitespace() {
        while let byte = self.peek(), byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 {
            self.index += 1
        }
    }

    mutating func expect(_ byte: UInt8, _ what: String) throws(Failure) {
        guard self.peek() == byte else { throw Failure("expected \(what)", at: self.index) }
        self.index += 1
    }

    mutating func scanTopLevelObject(into envelope: inout JSONEnvelope) throws(Failure) {
        try self.expect(UInt8(ascii: "{"), "'{'")
        self.skipWhitespace()
        if self.peek() == UInt8(ascii: "}") {
            self.index += 1
            return
        }
        while true {
            self.skipWhitespace()
            let keyStart = self.index + 1
            let keyHasEscapes = try self.scanString()
            let key = UnsafeRawBufferPointer(rebasing: self.bytes[keyStart..<(self.index - 1)])
            envelope.hasEscapedKeys = envelope.hasEscapedKeys || keyHasEscapes
            self.skipWhitespace()
            try self.expect(UInt8(ascii: ":"), "':'")
            self.skipWhitespace()
            let valueStart = self.index
            if key.isEqual(to: "type") {
                if self.peek() == UInt8(ascii: "\"") {
                    let hasEscapes = try self.scanString()
                    envelope.type =
                        hasEscapes
                        ? .other
                        : .string(String(decoding: self.bytes[(valueStart + 1)..<(self.index - 1)], as: UTF8.self))
                } else {
                    try self.scanValue(depth: 1)
                    envelope.type = .other
                }
            } else if key.isEqual(to: "id") {
                try self.scanValue(depth: 1)
                envelope.id = valueStart..<self.index
            } else if key.isEqual(to: "seq") {
                try self.scanValue(depth: 1)
                envelope.seq = valueStart..<self.index
            } else if key.isEqual(to: "last_seq") {
                try self.scanValue(depth: 1)
                envelope.lastSeq = valueStart..<self.index
            } else if key.isEqual(to: "epoch") {
                try self.scanValue(depth: 1)
                envelope.epoch = valueStart..<self.index
            } else {
                try self.scanValue(depth: 1)
            }
            self.skipWhitespace()
            switch self.peek() {
            case UInt8(ascii: ","):
                self.index += 1
            case UInt8(ascii: "}"):
                self.index += 1
                return
            default:
                throw Failure("expected ',' or '}'", at: self.index)
            }
        }
    }

    mutating func scanValue(depth: Int) throws(Failure) {
        guard depth < JSONEnvelope.maximumDepth else { throw Failure("nested too deeply", at: self.index) }
        guard let byte = self.peek() else { throw Failure("unexpected end of text", at: self.index) }
        switch byte {
        case UInt8(ascii: "{"):
            try self.scanContainer(close: UInt8(ascii: "}"), depth: depth, keyed: true)
        case UInt8(ascii: "["):
            try self.scanContainer(close: UInt8(ascii: "]"), depth: depth, keyed: false)
        case UInt8(ascii: "\""):
            _ = try self.scanString()
        case UInt8(ascii: "t"):
            try self.scanLiteral("true")
        case UInt8(ascii: "f"):
            try self.scanLiteral("false")
        case UInt8(ascii: "n"):
            try self.scanLiteral("null")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            try self.scanNumber()
        default:
            throw Failure("unexpected character", at: self.index)
        }
    }

    mutating func scanContainer(close: UInt8, depth: Int, keyed: Bool) throws(Failure) {
        self.index += 1
        self.skipWhitespace()
        if self.peek() == close {
            self.index += 1
            return
        }
        while true {
            self.skipWhitespace()
            if keyed {
                _ = try self.scanString()
                self.skipWhitespace()
                try self.expect(UInt8(ascii: ":"), "':'")
                self.skipWhitespace()
            }
            try self.scanValue(depth: depth + 1)
            self.skipWhitespace()
            guard let byte = self.peek() else { throw Failure("unexpected end of text", at: self.index) }
            self.index += 1
            if byte == close { return }
            guard byte == UInt8(ascii: ",") else { throw Failure("expected ',' or a closing bracket", at: self.index - 1) }
        }
    }

    /// Scans a string, returning whether it contained escapes. The text is already valid UTF-8.
    mutating func scanString() throws(Failure) -> Bool {
        try self.expect(UInt8(ascii: "\""), "a string")
        var hasEscapes = false
        while true {
            self.skipPlainStringBytes()
            guard let byte = self.peek() else { break }
            self.index += 1
            switch byte {
            case UInt8(ascii: "\""):
                return hasEscapes
            case UInt8(ascii: "\\"):
                hasEscapes = true
                guard let escaped = self.peek() else { break }
                self.index += 1
                switch escaped {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
                    UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    continue
                case UInt8(ascii: "u"):
                    for _ in 0..<4 {
                        guard let hex = self.peek(), hex.isHexDigit else {
                            throw Failure("invalid \\u escape", at: self.index)
                        }
                        self.index += 1
                    }
                default:
                    throw Failure("invalid escape", at: self.index - 1)
                }
            case 0..<0x20:
                throw Failure("control character in a string", at: self.index - 1)
            default:
                continue
            }
        }
        throw Failure("unterminated string", at: self.index)
    }

    /// Skips string bytes eight at a time up to the first quote, backslash or control character:
    /// a long string (a message's padding or payload) costs a load and a few word operations per
    /// eight bytes instead of a branch per byte.
    private mutating func skipPlainStringBytes() {
        while self.index + 8 <= self.bytes.count {
            let word = UInt64(littleEndian: self.bytes.loadUnaligned(fromByteOffset: self.index, as: UInt64.self))
            let special = JSONEnvelope.specialStringBytes(word)
            if special != 0 {
                self.index += special.trailingZeroBitCount / 8
                return
            }
            self.index += 8
        }
    }

    mutating func scanLiteral(_ literal: StaticString) throws(Failure) {
        let length = literal.utf8CodeUnitCount
        guard self.index + length <= self.bytes.count,
            UnsafeRawBufferPointer(rebasing: self.bytes[self.index..<(self.index + length)]).isEqual(to: literal)
        else { throw Failure("invalid literal", at: self.index) }
        self.index += length
    }

    mutating func scanNumber() throws(Failure) {
        if self.peek() == UInt8(ascii: "-") { self.index += 1 }
        guard let first = self.peek(), first.isDigit else { throw Failure("invalid number", at: self.index) }
        self.index += 1
        if first != UInt8(ascii: "0") {
            self.skipDigits()
        }
        if self.peek() == UInt8(ascii: ".") {
            self.index += 1
            guard self.peek()?.isDigit == true else { throw Failure("invalid number", at: self.index) }
            self.skipDigits()
        }
        if self.peek() == UInt8(ascii: "e") || self.peek() == UInt8(ascii: "E") {
            self.index += 1
            if self.peek() == UInt8(ascii: "+") || self.peek() == UInt8(ascii: "-") { self.index += 1 }
            guard self.peek()?.isDigit == true else { throw Failure("invalid number", at: self.index) }
            self.skipDigits()
        }
    }

    mutating func skipDigits() {
        while self.peek()?.isDigit == true { self.index += 1 }
    }
}

extension UnsafeRawBufferPointer {
    /// Byte comparison with an ASCII literal, without the generic `elementsEqual` path.
    fileprivate func isEqual(to literal: StaticString) -> Bool {
        let count = literal.utf8CodeUnitCount
        guard self.count == count, let base = self.baseAddress else { return count == 0 && self.isEmpty }
        return memcmp(base, literal.utf8Start, count) == 0
    }
}

extension UInt8 {
    fileprivate var isDigit: Bool { self >= UInt8(ascii: "0") && self <= UInt8(ascii: "9") }
    fileprivate var isHexDigit: Bool {
        self.isDigit || (self >= UInt8(ascii: "a") && self <= UInt8(ascii: "f"))
            || (self >= UInt8(ascii: "A") && self <= UInt8(ascii: "F"))
    }
}
