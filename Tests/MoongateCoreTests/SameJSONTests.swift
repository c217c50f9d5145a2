@testable import MoongateCore
import XCTest

/// A watcher's value is a change only if it is another JSON value, not the same one with its keys
/// in another order (as a new Lua state encodes it after a reload).
final class SameJSONTests: XCTestCase {
    func testKeyOrderIsNoChange() {
        XCTAssertTrue(SameJSON.same(#"[{"level":"warn","text":"disk"}]"#, #"[{"text":"disk","level":"warn"}]"#))
        XCTAssertTrue(SameJSON.same(#"{"a":{"x":1,"y":[1,2]},"b":null}"#, #"{"b":null,"a":{"y":[1,2],"x":1}}"#))
    }

    func testOtherValuesAreChanges() {
        XCTAssertFalse(SameJSON.same(#"{"a":1}"#, #"{"a":2}"#))
        XCTAssertFalse(SameJSON.same(#"{"a":true}"#, #"{"a":1}"#))
        XCTAssertFalse(SameJSON.same(#"{"a":1}"#, #"{"a":1.5}"#))
        XCTAssertFalse(SameJSON.same(#"[1,2]"#, #"[2,1]"#))
        XCTAssertFalse(SameJSON.same(#"{"a":[]}"#, #"{"a":{}}"#))
        XCTAssertFalse(SameJSON.same(#"{"a":null}"#, #"{}"#))
        XCTAssertFalse(SameJSON.same("x", nil))
        // Text that is not JSON is compared as text.
        XCTAssertTrue(SameJSON.same("plain", "plain"))
        XCTAssertFalse(SameJSON.same("plain", "other"))
    }
}
