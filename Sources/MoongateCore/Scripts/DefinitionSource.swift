/// Finds the lines a definition error points at in a script's source. Lua keeps no line for a
/// table field, so the source is searched from the `endpoint` call on, up to the next one.
struct DefinitionSource {
    private let bytes: [UInt8]

    init(_ source: [UInt8]) {
        self.bytes = source
    }

    /// The line of the `ordinal`-th `endpoint { ... }` or `endpoint(...)` call (1-based), for a
    /// definition whose call left no frame to name it (`return endpoint { ... }`, a tail call).
    func callLine(ordinal: Int) -> Int? {
        var position = 0
        var seen = 0
        while let call = self.find("endpoint", from: position, to: self.bytes.count, followedBy: Self.isCallOpener) {
            seen += 1
            if seen == ordinal { return self.line(of: call) }
            position = call + 1
        }
        return nil
    }

    /// The line where `field` is set (`on`, then `x` after it, for `on.x`), searching from the
    /// start of `line` to the next endpoint call; nil if it is not written there as `name =`.
    func fieldLine(_ field: [String], from line: Int) -> Int? {
        guard !field.isEmpty, var position = self.start(ofLine: line) else { return nil }
        let firstCall = self.find("endpoint", from: position, to: self.bytes.count, followedBy: Self.isCallOpener)
        let end = firstCall.flatMap { self.find("endpoint", from: $0 + 1, to: self.bytes.count, followedBy: Self.isCallOpener) } ?? self.bytes.count
        for name in field {
            guard let found = self.find(name, from: position, to: end, followedBy: Self.isAssignment) else { return nil }
            position = found
        }
        return self.line(of: position)
    }

    private static func isCallOpener(_ bytes: [UInt8], _ index: Int) -> Bool {
        index < bytes.count && (bytes[index] == UInt8(ascii: "{") || bytes[index] == UInt8(ascii: "("))
    }

    /// `=` but not `==`.
    private static func isAssignment(_ bytes: [UInt8], _ index: Int) -> Bool {
        index < bytes.count && bytes[index] == UInt8(ascii: "=") && (index + 1 == bytes.count || bytes[index + 1] != UInt8(ascii: "="))
    }

    private static func isNamePart(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
            || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: "_")
    }

    private static func isSpace(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || (byte >= 9 && byte <= 13)
    }

    /// The first whole-word `name` in `from..<to` (not part of a longer name, nor after `.` or
    /// `:`), followed, after any spaces, by what `followedBy` accepts.
    private func find(_ name: String, from start: Int, to end: Int, followedBy accepts: ([UInt8], Int) -> Bool) -> Int? {
        let word = Array(name.utf8)
        guard !word.isEmpty, start <= end - word.count else { return nil }
        for index in start...(end - word.count) where self.bytes[index] == word[0] {
            guard self.bytes[index..<(index + word.count)].elementsEqual(word) else { continue }
            if index > 0 {
                let before = self.bytes[index - 1]
                guard !Self.isNamePart(before), before != UInt8(ascii: "."), before != UInt8(ascii: ":") else { continue }
            }
            var after = index + word.count
            guard after == self.bytes.count || !Self.isNamePart(self.bytes[after]) else { continue }
            guard !self.isInLineComment(index) else { continue }
            while after < self.bytes.count, Self.isSpace(self.bytes[after]) { after += 1 }
            if accepts(self.bytes, after) { return index }
        }
        return nil
    }

    /// After `--` on its line (a comment, or now and then a string holding `--`, which only
    /// costs a more general line in the error).
    private func isInLineComment(_ index: Int) -> Bool {
        var position = index
        while position > 0, self.bytes[position - 1] != UInt8(ascii: "\n") {
            if position >= 2, self.bytes[position - 1] == UInt8(ascii: "-"), self.bytes[position - 2] == UInt8(ascii: "-") {
                return true
            }
            position -= 1
        }
        return false
    }

    private func line(of index: Int) -> Int {
        self.bytes[..<index].reduce(1) { $1 == UInt8(ascii: "\n") ? $0 + 1 : $0 }
    }

    private func start(ofLine line: Int) -> Int? {
        guard line >= 1 else { return nil }
        var current = 1
        var index = 0
        while current < line {
            guard let newline = self.bytes[index...].firstIndex(of: UInt8(ascii: "\n")) else { return nil }
            index = newline + 1
            current += 1
        }
        return index
    }
}
