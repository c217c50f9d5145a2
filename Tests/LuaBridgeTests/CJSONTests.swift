import LuaBridge
import XCTest

/// lua-cjson behaviour that scripts' `json` (and the host's replies) inherit, pinned so that an
/// upgrade or a switch of encoder shows up here first.
final class CJSONTests: XCTestCase {
    private var lua: LuaState!

    override func setUpWithError() throws {
        self.lua = try LuaState(scriptName: "cjson.lua")
    }

    override func tearDown() {
        self.lua = nil
    }

    /// Runs `body` with `cjson` in scope and returns its single result.
    private func json(_ body: String) throws -> String? {
        try self.lua.run("local cjson = ...\n" + body, chunkName: "cjson.lua", results: 1) { lua in
            lua.pushHostLibraries()
            lua.pop()  // keep cjson, drop debug
            return 1
        }.first ?? nil
    }

    func testEmptyTableEncodesAsObject() throws {
        XCTAssertEqual(try self.json("return cjson.encode({})"), "{}")
        // So an empty array does not survive a round trip.
        XCTAssertEqual(try self.json("return cjson.encode(cjson.decode('[]'))"), "{}")
    }

    func testSequencesEncodeAsArrays() throws {
        XCTAssertEqual(try self.json("return cjson.encode({1, 2, 3})"), "[1,2,3]")
        XCTAssertEqual(try self.json("return cjson.encode({[1] = 1, [2] = 2, [4] = 4})"), "[1,2,null,4]")
        XCTAssertEqual(
            try self.json("local ok, err = pcall(cjson.encode, {[1] = 1, [20] = 2}) return err"),
            "Cannot serialise table: excessively sparse array"
        )
    }

    func testMixedTablesBecomeObjectsWithStringKeys() throws {
        XCTAssertEqual(try self.json("return cjson.encode({1, x = 2})"), #"{"1":1,"x":2}"#)
    }

    func testNumbersUseFourteenSignificantDigits() throws {
        XCTAssertEqual(try self.json("return cjson.encode(1/3)"), "0.33333333333333")
        XCTAssertEqual(try self.json("return cjson.encode(12345678901234567)"), "1.2345678901235e+16")
        XCTAssertEqual(try self.json("return cjson.encode(1700000000123)"), "1700000000123", "millisecond timestamps survive")
        XCTAssertEqual(try self.json("return cjson.encode({n = 7})"), #"{"n":7}"#)
    }

    func testDecodedNumbersAreFloats() throws {
        XCTAssertEqual(try self.json("return math.type(cjson.decode('{\"n\":7}').n)"), "float")
        XCTAssertEqual(try self.json("return tostring(cjson.decode('{\"n\":7}').n)"), "7.0")
        XCTAssertEqual(try self.json("return cjson.encode(cjson.decode('{\"n\":7}'))"), #"{"n":7}"#)
    }

    func testNullIsASentinel() throws {
        XCTAssertEqual(try self.json("return type(cjson.decode('{\"a\":null}').a)"), "userdata")
        XCTAssertEqual(try self.json("return tostring(cjson.decode('{\"a\":null}').a == cjson.null)"), "true")
        XCTAssertEqual(try self.json("return cjson.encode({a = cjson.null})"), #"{"a":null}"#)
    }

    func testStringEscaping() throws {
        XCTAssertEqual(try self.json("return cjson.encode('a/b')"), #""a\/b""#)
        XCTAssertEqual(try self.json(#"return cjson.encode('é\n\t"\1')"#), #""é\n\t\"\u0001""#)
    }

    func testUnencodableValuesAreErrors() throws {
        XCTAssertEqual(
            try self.json("local ok, err = pcall(cjson.encode, function() end) return err"),
            "Cannot serialise function: type not supported"
        )
        XCTAssertEqual(
            try self.json("local ok, err = pcall(cjson.encode, 0/0) return err"),
            "Cannot serialise number: must not be NaN or Inf"
        )
    }

    func testDecodeErrorsNameThePosition() throws {
        XCTAssertEqual(
            try self.json("local ok, err = pcall(cjson.decode, '{bad') return err"),
            "Expected object key string but found invalid token at character 2"
        )
    }
}
