import Foundation
import NIOCore
import XCTest

@testable import MoongateCore

/// The host's one JSON string escaper: what it writes, JSONSerialization reads back unchanged.
final class JSONStringTests: XCTestCase {
    func testEveryStringRoundTrips() throws {
        for text in ["plain", "quote \" and back\\slash", "line\nbreak\r\ttab", "\u{0}\u{1}\u{1F}", "héllo ✓ 🌙", ""] {
            let literal = jsonString(text)
            let decoded = try JSONSerialization.jsonObject(with: Data(literal.utf8), options: [.fragmentsAllowed]) as? String
            XCTAssertEqual(decoded, text, literal)
        }
    }

    func testAnErrorReplyWithALineBreakIsValidJSON() throws {
        var reply = MessageRouting.error("scripts/a.lua:3: first line\nsecond line", id: "7")
        let bytes = reply.readBytes(length: reply.readableBytes) ?? []
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
        XCTAssertEqual(object["error"] as? String, "scripts/a.lua:3: first line\nsecond line")
        XCTAssertEqual(object["id"] as? Int, 7)
    }
}
