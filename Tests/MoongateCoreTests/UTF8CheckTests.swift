import XCTest

@testable import MoongateCore

final class UTF8CheckTests: XCTestCase {
    func testAnUnfinishedCharacterAtTheEndIsCarriedNotJudged() {
        XCTAssertEqual(UTF8Check.incompleteTailStart(Array("ab".utf8)), 2)
        XCTAssertEqual(UTF8Check.incompleteTailStart(Array("aé".utf8)), 3)  // é complete
        XCTAssertEqual(UTF8Check.incompleteTailStart([0x61, 0xC3] as [UInt8]), 1)
        XCTAssertEqual(UTF8Check.incompleteTailStart([0x61, 0xF0, 0x9F, 0x98] as [UInt8]), 1)
        XCTAssertEqual(UTF8Check.incompleteTailStart([0xF0, 0x9F, 0x98, 0x80] as [UInt8]), 4)
        XCTAssertEqual(UTF8Check.incompleteTailStart([] as [UInt8]), 0)
    }

    func testPrefixesThatCanNeverBecomeCharactersFailAtOnce() {
        XCTAssertTrue(UTF8Check.isValidPrefix([0xF0, 0x9F] as [UInt8]))
        XCTAssertTrue(UTF8Check.isValidPrefix([0xE2] as [UInt8]))
        XCTAssertFalse(UTF8Check.isValidPrefix([0xF4, 0x90] as [UInt8]))  // past U+10FFFF
        XCTAssertFalse(UTF8Check.isValidPrefix([0xED, 0xA0] as [UInt8]))  // a surrogate
        XCTAssertFalse(UTF8Check.isValidPrefix([0xE0, 0x80] as [UInt8]))  // overlong
        XCTAssertFalse(UTF8Check.isValidPrefix([0xF5] as [UInt8]))
        XCTAssertFalse(UTF8Check.isValidPrefix([0xF0, 0x9F, 0x41] as [UInt8]))
    }

    func testEverySplitOfValidTextIsAcceptedFragmentByFragment() {
        let text = Array("κόσμε 😀 ok".utf8)
        for first in 0...text.count {
            for second in first...text.count {
                var validator = StreamingUTF8Validator()
                let parts = [text[..<first], text[first..<second], text[second...]]
                for (index, part) in parts.enumerated() {
                    let ok = Array(part).withUnsafeBytes { validator.feed($0, isFinal: index == 2) }
                    XCTAssertTrue(ok, "split at \(first), \(second), part \(index)")
                }
            }
        }
    }

    func testInvalidBytesFailInTheFragmentThatCarriesThem() {
        var validator = StreamingUTF8Validator()
        XCTAssertTrue(Array("κόσμε".utf8).withUnsafeBytes { validator.feed($0, isFinal: false) })
        XCTAssertTrue(([0xF4] as [UInt8]).withUnsafeBytes { validator.feed($0, isFinal: false) })
        XCTAssertFalse(([0x90, 0x80, 0x80] as [UInt8]).withUnsafeBytes { validator.feed($0, isFinal: false) })
    }

    func testAMessageMayNotEndInsideACharacter() {
        var validator = StreamingUTF8Validator()
        XCTAssertTrue(([0x61, 0xE2, 0x82] as [UInt8]).withUnsafeBytes { validator.feed($0, isFinal: false) })
        XCTAssertFalse(([] as [UInt8]).withUnsafeBytes { validator.feed($0, isFinal: true) })
    }
}
