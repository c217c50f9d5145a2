import XCTest

@testable import MoongateCore

final class UTF8CheckTests: XCTestCase {
    func testAnUnfinishedCharacterAtTheEndIsCarriedNotJudged() {
        XCTAssertEqual(UTF8Check.incompleteTailStart(Array("ab".utf8)), 2)
        XCTAssertEqual(UTF8Check.incompleteTailStart(Array("aé".utf8)), 3)  // é complete
        XCTAssertEqual(UTF8Check.incompleteTailStart([0x61, 0xC3]), 1)
        XCTAssertEqual(UTF8Check.incompleteTailStart([0x61, 0xF0, 0x9F, 0x98]), 1)
        XCTAssertEqual(UTF8Check.incompleteTailStart([0xF0, 0x9F, 0x98, 0x80]), 4)
        XCTAssertEqual(UTF8Check.incompleteTailStart([]), 0)
    }

    func testPrefixesThatCanNeverBecomeCharactersFailAtOnce() {
        XCTAssertTrue(UTF8Check.isValidPrefix([0xF0, 0x9F][...]))
        XCTAssertTrue(UTF8Check.isValidPrefix([0xE2][...]))
        XCTAssertFalse(UTF8Check.isValidPrefix([0xF4, 0x90][...]))  // past U+10FFFF
        XCTAssertFalse(UTF8Check.isValidPrefix([0xED, 0xA0][...]))  // a surrogate
        XCTAssertFalse(UTF8Check.isValidPrefix([0xE0, 0x80][...]))  // overlong
        XCTAssertFalse(UTF8Check.isValidPrefix([0xF5][...]))
        XCTAssertFalse(UTF8Check.isValidPrefix([0xF0, 0x9F, 0x41][...]))
    }
}
