import NIOCore
import XCTest

@testable import MoongateCore

final class JSONEnvelopeTests: XCTestCase {
    private func scan(_ text: String) -> JSONEnvelope.Outcome {
        var text = text
        return text.withUTF8 { JSONEnvelope.scan(UnsafeRawBufferPointer($0)) }
    }

    private func rawID(_ text: String) -> String? {
        guard case .object(let envelope) = self.scan(text), let id = envelope.id else { return nil }
        return String(decoding: Array(text.utf8)[id], as: UTF8.self)
    }

    func testFindsTypeAndTheExactBytesOfTheID() {
        XCTAssertEqual(self.rawID(#"{"type":"hb","id":9007199254740993}"#), "9007199254740993")
        XCTAssertEqual(self.rawID(#"{ "id" : {"k":[]} , "type":"x"}"#), #"{"k":[]}"#)
        XCTAssertEqual(self.rawID(#"{"id":"a\"b"}"#), #""a\"b""#)
        guard case .object(let envelope) = self.scan(#"{"a":[1,{"type":"inner"}],"type":"outer"}"#) else {
            return XCTFail("expected an object")
        }
        XCTAssertEqual(envelope.type, .string("outer"))
    }

    func testTypesThatAreNotPlainStringsAreLeftToTheScript() {
        guard case .object(let escaped) = self.scan(#"{"type":"a\u0062"}"#),
            case .object(let number) = self.scan(#"{"type":3}"#),
            case .object(let absent) = self.scan(#"{"x":1}"#)
        else { return XCTFail("expected objects") }
        XCTAssertEqual(escaped.type, .other)
        XCTAssertEqual(number.type, .other)
        XCTAssertEqual(absent.type, .absent)
    }

    func testNonObjectsAreRecognised() {
        for text in ["[1,2]", #""text""#, "12", "true", " null "] {
            XCTAssertEqual(self.scan(text), .notAnObject, text)
        }
    }

    func testMalformedJSONIsRejected() {
        for text in [
            "", "{", "{\"a\":}", "{\"a\":1,}", "[1,]", "{\"a\":tru}", "{\"a\":01}", "{\"a\":1.}", "{\"a\":-}",
            "{\"a\":\"\u{01}\"}", "{\"a\":\"\\x\"}", "{\"a\":\"\\u12g4\"}", "{} {}", "{'a':1}", "{\"a\" 1}",
            String(repeating: "[", count: 600) + String(repeating: "]", count: 600),
        ] {
            guard case .invalid = self.scan(text) else {
                return XCTFail("accepted \(text.prefix(40))")
            }
        }
    }

    func testValidJSONIsAccepted() {
        for text in [
            "{}", #"{"a":[]}"#, #"{"a":-0.5e+10,"b":[true,false,null],"c":{"d":"\u00e9\n"}}"#, " { \"a\" : 1 } ",
        ] {
            guard case .object = self.scan(text) else {
                return XCTFail("rejected \(text)")
            }
        }
    }

    func testArrayElementsAreSplitExactly() {
        var text = #"[{"a":1}, {"b":[2,3]} ,{}]"#
        let ranges = text.withUTF8 { try? JSONEnvelope.arrayElements(UnsafeRawBufferPointer($0)).get() }
        let bytes = Array(text.utf8)
        XCTAssertEqual(ranges?.map { String(decoding: bytes[$0], as: UTF8.self) }, [#"{"a":1}"#, #"{"b":[2,3]}"#, "{}"])
    }

    func testSeqIsStampedFirst() {
        XCTAssertEqual(String(buffer: Session.stamp(ByteBuffer(string: #"{"type":"a"}"#), seq: 7)), #"{"seq":7,"type":"a"}"#)
        XCTAssertEqual(String(buffer: Session.stamp(ByteBuffer(string: " { } "), seq: 1)), #"{"seq":1}"#)
    }

    /// The word-at-a-time skip over string bytes finds exactly the first quote, backslash or
    /// control character, whatever the other bytes (0x80 and up included).
    func testTheEightByteStringSkipFindsExactlyTheFirstSpecialByte() {
        func naive(_ bytes: [UInt8]) -> Int? { bytes.firstIndex { $0 == 0x22 || $0 == 0x5C || $0 < 0x20 } }
        func first(_ bytes: [UInt8]) -> Int? {
            let word = UInt64(littleEndian: bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
            let special = JSONEnvelope.specialStringBytes(word)
            return special == 0 ? nil : special.trailingZeroBitCount / 8
        }
        for position in 0..<8 {
            for value in 0...255 {
                for filler: UInt8 in [0x61, 0xFF, 0x80, 0x21, 0x5D, 0x01] {
                    var bytes = [UInt8](repeating: filler, count: 8)
                    bytes[position] = UInt8(value)
                    XCTAssertEqual(first(bytes), naive(bytes), "\(bytes)")
                }
            }
        }
        var random = SplitMix64(seed: 0x4a53_4f4e)
        for _ in 0..<100_000 {
            let bytes = (0..<8).map { _ in UInt8.random(in: 0...255, using: &random) }
            XCTAssertEqual(first(bytes), naive(bytes), "\(bytes)")
        }
    }
}
