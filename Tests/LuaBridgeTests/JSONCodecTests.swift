import CLua
import LuaBridge
import XCTest

/// The JSON codec scripts get as `json` (Sources/LuaJSON/json.c): strict RFC 8259, integers that
/// stay integers, arrays that stay arrays even when empty, floats that read back bit for bit, and
/// every allocation under the state's memory cap.
///
final class JSONCodecTests: XCTestCase {
    private var lua: LuaState!

    override func setUpWithError() throws {
        self.lua = try LuaState(scriptName: "json.lua")
        self.lua.openJSONAsGlobal()
    }

    override func tearDown() {
        self.lua = nil
    }

    /// Runs `chunk`, which returns one value, and returns that value as a string (nil for nil).
    private func eval(_ chunk: String) throws -> String? {
        try self.lua.run(chunk, chunkName: "json_test.lua", results: 1).first ?? nil
    }

    /// The message `function(arguments)` raises, caught with pcall, or "no error"; `setup` runs first.
    /// pcall calls the function directly: called from a Lua line, luaL_error would put that line's
    /// "json_test.lua:N: " in front of the message, as it does for every C function.
    private func failure(_ function: String, _ arguments: String, setup: String = "") throws -> String? {
        try self.eval("\(setup)\nlocal ok, err = pcall(\(function), \(arguments))\nreturn ok and 'no error' or err")
    }

    /// Decodes `text` (passed as an argument, so it needs no quoting) and returns it re-encoded
    /// as "ok: <json>", or the decoder's error message.
    private func decoding(_ text: String) throws -> String? {
        try self.lua.run(
            """
            local ok, result = pcall(json.decode, ...)
            if not ok then return result end
            return "ok: " .. json.encode(result)
            """,
            chunkName: "json_test.lua"
        ) { lua in
            lua.push(text)
            return 1
        }.first ?? nil
    }

    // MARK: - The module

    func testModuleShape() throws {
        XCTAssertEqual(
            try self.eval("return type(json.encode) .. type(json.decode) .. type(json.array) .. type(json.is_array)"),
            "functionfunctionfunctionfunction"
        )
        // json.null is a light userdata holding NULL, as cjson.null is: the host treats it as JSON null.
        XCTAssertEqual(try self.eval("return type(json.null)"), "userdata")
        XCTAssertEqual(try self.eval("return tostring(json.decode('null') == json.null)"), "true")
        XCTAssertEqual(try self.eval("return tostring(json.decode('[null]')[1] == json.null)"), "true")
        XCTAssertEqual(try self.eval("return json.encode({ a = json.null })"), #"{"a":null}"#)
    }

    // MARK: - Numbers

    func testDecodedIntegersStayIntegers() throws {
        XCTAssertEqual(try self.eval(#"return math.type(json.decode('{"a":42}').a)"#), "integer")
        XCTAssertEqual(try self.eval(#"return tostring(json.decode('{"a":42}').a)"#), "42")
        XCTAssertEqual(try self.eval("return math.type(json.decode('0'))"), "integer")
        XCTAssertEqual(try self.eval("return math.type(json.decode('-0')) .. ' ' .. json.decode('-0')"), "integer 0")
        // Nanosecond timestamps survive exactly (a double would round them).
        XCTAssertEqual(try self.eval("return tostring(json.decode('1686041011364000000') == 1686041011364000000)"), "true")
        XCTAssertEqual(try self.eval("return json.encode(json.decode('1686041011364000000'))"), "1686041011364000000")
        XCTAssertEqual(try self.eval("return json.encode(json.decode('[9223372036854775807]'))"), "[9223372036854775807]")
        XCTAssertEqual(try self.eval("return json.encode(json.decode('[-9223372036854775808]'))"), "[-9223372036854775808]")
        XCTAssertEqual(try self.eval("return tostring(json.decode('9223372036854775807') == math.maxinteger)"), "true")
        XCTAssertEqual(try self.eval("return tostring(json.decode('-9223372036854775808') == math.mininteger)"), "true")
    }

    func testNumbersOutsideInt64OrWithFractionOrExponentAreFloats() throws {
        XCTAssertEqual(try self.eval("return math.type(json.decode('9223372036854775808'))"), "float")
        XCTAssertEqual(try self.eval("return tostring(json.decode('9223372036854775808') == 2^63)"), "true")
        XCTAssertEqual(try self.eval("return math.type(json.decode('-9223372036854775809'))"), "float")
        XCTAssertEqual(try self.eval("return math.type(json.decode('1.0')) .. ' ' .. json.decode('1.0')"), "float 1.0")
        XCTAssertEqual(try self.eval("return math.type(json.decode('1e2')) .. ' ' .. json.decode('1e2')"), "float 100.0")
        XCTAssertEqual(try self.eval("return tostring(json.decode('-1.5E-3') == -0.0015)"), "true")
        XCTAssertEqual(try self.eval("return string.format('%q', json.decode('-0.0'))"), "-0x0p+0")
    }

    func testIntegersEncodeExactly() throws {
        XCTAssertEqual(try self.eval("return json.encode(math.maxinteger)"), "9223372036854775807")
        XCTAssertEqual(try self.eval("return json.encode(math.mininteger)"), "-9223372036854775808")
        XCTAssertEqual(try self.eval("return json.encode({0, -7, 1700000000123})"), "[0,-7,1700000000123]")
    }

    func testFloatsUseTheShortestTextThatReadsBack() throws {
        let cases: [(String, String)] = [
            ("1.0", "1.0"),
            ("1e20", "1e+20"),
            ("-0.0", "-0.0"),
            ("0.0", "0.0"),
            ("0.1", "0.1"),
            ("1/3", "0.3333333333333333"),
            ("0.1 + 0.2", "0.30000000000000004"),
            ("-2.5", "-2.5"),
            ("100.0", "100.0"),
            ("2^53", "9007199254740992.0"),
            ("1e15", "1e+15"),
            ("0.0001", "0.0001"),
            ("0.00001", "1e-05"),
            ("5e-324", "4.94065645841247e-324"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
        ]
        for (lua, json) in cases {
            XCTAssertEqual(try self.eval("return json.encode(\(lua))"), json, lua)
        }
    }

    func testFloatsRoundTripBitForBit() throws {
        let values = [
            "0.1", "1/3", "5e-324", "1.7976931348623157e308", "2.2250738585072014e-308", "-0.0", "math.pi",
            "1e21", "12345678901234567.0", "0.1 + 0.2", "-1e-300", "4.35", "2^63", "1e15", "0.00011",
        ]
        for value in values {
            let result = try self.eval("""
                local x = \(value)
                local y = json.decode(json.encode(x))
                return math.type(y) .. " " .. tostring(string.pack("d", y) == string.pack("d", x))
                """)
            XCTAssertEqual(result, "float true", value)
        }
    }

    func testNaNAndInfinityCannotBeEncoded() throws {
        for value in ["0/0", "math.huge", "-math.huge", "{ x = 0/0 }", "{ [math.huge] = 1 }"] {
            XCTAssertEqual(try self.failure("json.encode", value), "json.encode: cannot encode NaN or infinity", value)
        }
    }

    // MARK: - Arrays and objects

    func testEmptyArraysSurviveARoundTrip() throws {
        XCTAssertEqual(try self.eval(#"return json.encode(json.decode('{"online":[]}'))"#), #"{"online":[]}"#)
        XCTAssertEqual(try self.eval("return json.encode(json.decode('[]'))"), "[]")
        XCTAssertEqual(try self.eval("return json.encode(json.decode('{}'))"), "{}")
        XCTAssertEqual(try self.eval("return json.encode(json.decode('[[],{},[{}]]'))"), "[[],{},[{}]]")
    }

    func testDecodedArraysShareTheArrayMetatableAndObjectsHaveNone() throws {
        XCTAssertEqual(try self.eval("return tostring(json.is_array(json.decode('[]')))"), "true")
        XCTAssertEqual(try self.eval("return tostring(json.is_array(json.decode('[1,2]')))"), "true")
        XCTAssertEqual(try self.eval("return tostring(json.is_array(json.decode('{}')))"), "false")
        XCTAssertEqual(try self.eval("return tostring(getmetatable(json.decode('{\"a\":1}')))"), "nil")
        XCTAssertEqual(
            try self.eval("return tostring(getmetatable(json.decode('[1]')) == getmetatable(json.decode('[]')))"),
            "true"
        )
        XCTAssertEqual(try self.eval("local a = json.decode('[1,null,3]') return #a .. ' ' .. tostring(a[2] == json.null)"), "3 true")
    }

    func testJsonArrayMarksTables() throws {
        XCTAssertEqual(try self.eval("return json.encode(json.array())"), "[]")
        XCTAssertEqual(try self.eval("return json.encode(json.array({}))"), "[]")
        XCTAssertEqual(try self.eval("local t = {} return tostring(json.array(t) == t and json.is_array(t))"), "true")
        XCTAssertEqual(try self.eval("return tostring(json.is_array({}))"), "false")
        XCTAssertEqual(try self.eval("return tostring(json.is_array('x'))"), "false")
        // A marked table is an array of 1..#t; holes are null, other keys are ignored.
        XCTAssertEqual(try self.eval("return json.encode(json.array({1, nil, 3}))"), "[1,null,3]")
        XCTAssertEqual(try self.eval("return json.encode(json.array({n = 1}))"), "[]")
        let error = try XCTUnwrap(try self.failure("json.array", "5"))
        XCTAssertTrue(error.hasPrefix("bad argument #1 to '"), error)
        XCTAssertTrue(error.hasSuffix("' (table expected, got number)"), error)
    }

    func testTableShapes() throws {
        XCTAssertEqual(try self.eval("return json.encode({})"), "{}")
        XCTAssertEqual(try self.eval("return json.encode({1, 2, 3})"), "[1,2,3]")
        XCTAssertEqual(try self.eval("return json.encode({'a', {true, false}})"), #"["a",[true,false]]"#)
        // Keys that are not exactly 1..n make an object, numbers written as strings.
        XCTAssertEqual(try self.eval("return json.encode({[1] = 1, [2] = 2, [4] = 4})"), #"{"1":1,"2":2,"4":4}"#)
        XCTAssertEqual(try self.eval("return json.encode({[0] = 'a'})"), #"{"0":"a"}"#)
        XCTAssertEqual(try self.eval("return json.encode({[-1] = 'a'})"), #"{"-1":"a"}"#)
        XCTAssertEqual(try self.eval("return json.encode({[1.5] = true})"), #"{"1.5":true}"#)
        XCTAssertEqual(try self.eval("return json.encode({[2^63] = 1})"), #"{"9.223372036854776e+18":1}"#)
        XCTAssertEqual(try self.eval("return json.encode({n = 7})"), #"{"n":7}"#)
        let mixed = try self.eval("return json.encode({1, x = 2})")
        XCTAssertTrue(mixed == #"{"1":1,"x":2}"# || mixed == #"{"x":2,"1":1}"#, mixed ?? "nil")
        XCTAssertEqual(try self.eval("return json.encode({json.null, false, true})"), "[null,false,true]")
        XCTAssertEqual(try self.eval("return json.encode(nil)"), "null")
        XCTAssertEqual(try self.eval("return json.encode(true)"), "true")
        XCTAssertEqual(try self.eval("return json.encode('x')"), #""x""#)
    }

    func testKeysMustBeStringsOrNumbers() throws {
        XCTAssertEqual(
            try self.failure("json.encode", "{[true] = 1}"),
            "json.encode: a table key must be a string or a number, got boolean"
        )
        XCTAssertEqual(
            try self.failure("json.encode", "{[{}] = 1}"),
            "json.encode: a table key must be a string or a number, got table"
        )
    }

    func testDuplicateKeysLastWins() throws {
        XCTAssertEqual(try self.eval(#"return json.decode('{"a":1,"a":2}').a"#), "2")
        XCTAssertEqual(try self.eval(#"return json.encode(json.decode('{"a":1,"b":true,"a":[3]}').a)"#), "[3]")
    }

    func testUnencodableValues() throws {
        XCTAssertEqual(try self.failure("json.encode", "print"), "json.encode: cannot encode a function")
        XCTAssertEqual(try self.failure("json.encode", "{ f = function() end }"), "json.encode: cannot encode a function")
        XCTAssertEqual(try self.failure("json.encode", "{coroutine.create(print)}"), "json.encode: cannot encode a thread")
    }

    func testTablesAreReadRawWithoutMetamethods() throws {
        XCTAssertEqual(
            try self.eval("""
                local t = setmetatable({}, {
                  __index = function() error("ran __index") end,
                  __pairs = function() error("ran __pairs") end,
                  __len = function() error("ran __len") end,
                })
                return json.encode(t)
                """),
            "{}"
        )
        XCTAssertEqual(
            try self.eval("return json.encode(setmetatable({1, 2}, { __index = function() return 9 end }))"),
            "[1,2]"
        )
    }

    // MARK: - Strings

    func testStringEncoding() throws {
        XCTAssertEqual(try self.eval("return json.encode('a/b')"), #""a/b""#, "/ is not escaped")
        XCTAssertEqual(try self.eval(#"return json.encode('é\n\t"\\\1')"#), #""é\n\t\"\\\u0001""#)
        XCTAssertEqual(try self.eval(#"return json.encode('\b\f\r\0\31\127')"#), "\"\\b\\f\\r\\u0000\\u001f\u{7F}\"")
        XCTAssertEqual(try self.eval("return json.encode('日本語 😀')"), #""日本語 😀""#)
    }

    func testEncodedStringsMustBeValidUTF8() throws {
        let invalid = [
            #"'\255'"#,  // not a lead byte
            #"'\xC0\x80'"#,  // overlong NUL
            #"'\xE0\x80\xAF'"#,  // overlong '/'
            #"'\xED\xA0\x80'"#,  // UTF-8 of the surrogate U+D800
            #"'\xF4\x90\x80\x80'"#,  // above U+10FFFF
            #"'abc\xE2\x82'"#,  // truncated
            #"{ ['\255'] = 1 }"#,  // keys too
        ]
        for value in invalid {
            XCTAssertEqual(try self.failure("json.encode", value), "json.encode: string is not valid UTF-8", value)
        }
        XCTAssertEqual(try self.eval(#"return json.encode('\xF4\x8F\xBF\xBF')"#), "\"\u{10FFFF}\"")
    }

    func testStringDecoding() throws {
        XCTAssertEqual(
            try self.eval(#"return json.decode('"\\u00e9\\n\\/\\"\\\\\\b\\f\\r\\t"') == 'é\n/"\\\b\f\r\t' and 'same' or 'different'"#),
            "same"
        )
        XCTAssertEqual(try self.eval(#"return json.decode('"\\ud83d\\ude00"')"#), "😀", "surrogate pair")
        XCTAssertEqual(try self.eval(#"return json.decode('"\\u20AC"')"#), "€")
        XCTAssertEqual(try self.eval(#"return #json.decode('"a\\u0000b"')"#), "3")
        XCTAssertEqual(try self.decoding(#""日本語""#), #"ok: "日本語""#)
    }

    func testStringDecodingErrors() throws {
        let cases: [(String, String)] = [
            (#""\ud83d""#, "json.decode: lone surrogate in \\u escape at byte 2"),
            (#""\ude00""#, "json.decode: lone surrogate in \\u escape at byte 2"),
            (#""\ud83d\u0041""#, "json.decode: lone surrogate in \\u escape at byte 2"),
            (#""\x""#, "json.decode: invalid escape at byte 2"),
            (#""\'""#, "json.decode: invalid escape at byte 2"),
            (#""\u12""#, "json.decode: invalid \\u escape at byte 2"),
            ("\"a\nb\"", "json.decode: control character in string at byte 3"),
            ("\"a\tb\"", "json.decode: control character in string at byte 3"),
            ("\"ab\\n\u{1}\"", "json.decode: control character in string at byte 6"),
            (#""abc"#, "json.decode: unexpected end of input at byte 5"),
            (#""abc\"#, "json.decode: unexpected end of input at byte 6"),
        ]
        for (text, message) in cases {
            XCTAssertEqual(try self.decoding(text), message, text)
        }
        // Invalid UTF-8 can only be written as Lua escapes.
        let invalid: [(String, String)] = [
            (#"'"\255"'"#, "json.decode: invalid UTF-8 at byte 2"),
            (#"'"\xC0\x80"'"#, "json.decode: invalid UTF-8 at byte 2"),
            (#"'"\xED\xA0\x80"'"#, "json.decode: invalid UTF-8 at byte 2"),
            (#"'"\xF4\x90\x80\x80"'"#, "json.decode: invalid UTF-8 at byte 2"),
            (#"'"\\n\255"'"#, "json.decode: invalid UTF-8 at byte 4"),
        ]
        for (lua, message) in invalid {
            XCTAssertEqual(try self.failure("json.decode", lua), message, lua)
        }
    }

    // MARK: - Strict grammar

    func testDecodeErrorsNameTheByteOffset() throws {
        let cases: [(String, String)] = [
            (#"{"a":1 "b":2}"#, "json.decode: expected ',' or '}' at byte 8"),
            (#"{"type":"job","id" 7}"#, "json.decode: expected ':' at byte 20"),
            ("{bad", "json.decode: expected a string key or '}' at byte 2"),
            (#"{"a":1,}"#, "json.decode: expected a string key at byte 8"),
            ("[1,]", "json.decode: expected a value at byte 4"),
            ("[1 2]", "json.decode: expected ',' or ']' at byte 4"),
            ("", "json.decode: unexpected end of input at byte 1"),
            ("   ", "json.decode: unexpected end of input at byte 4"),
            ("[1", "json.decode: unexpected end of input at byte 3"),
            (#"{"a":"#, "json.decode: unexpected end of input at byte 6"),
            ("01", "json.decode: invalid number (leading zero) at byte 1"),
            ("-01", "json.decode: invalid number (leading zero) at byte 1"),
            ("+1", "json.decode: expected a value at byte 1"),
            (".5", "json.decode: expected a value at byte 1"),
            ("1.", "json.decode: invalid number at byte 1"),
            ("[1.e5]", "json.decode: invalid number at byte 2"),
            ("1e", "json.decode: invalid number at byte 1"),
            ("1e+", "json.decode: invalid number at byte 1"),
            ("-", "json.decode: invalid number at byte 1"),
            ("NaN", "json.decode: expected a value at byte 1"),
            ("Infinity", "json.decode: expected a value at byte 1"),
            ("-Infinity", "json.decode: invalid number at byte 1"),
            ("0x10", "json.decode: unexpected data after the value at byte 2"),
            ("1 2", "json.decode: unexpected data after the value at byte 3"),
            ("[1] // comment", "json.decode: unexpected data after the value at byte 5"),
            ("/* comment */ [1]", "json.decode: expected a value at byte 1"),
            ("tru", "json.decode: expected a value at byte 1"),
            ("True", "json.decode: expected a value at byte 1"),
            ("'a'", "json.decode: expected a value at byte 1"),
            ("[1\u{0}]", "json.decode: expected ',' or ']' at byte 3"),
            ("\u{FEFF}[]", "json.decode: expected a value at byte 1"),
        ]
        for (text, message) in cases {
            XCTAssertEqual(try self.decoding(text), message, text)
        }
    }

    func testWhitespaceAroundTheValueIsAllowed() throws {
        XCTAssertEqual(try self.decoding(" \t\r\n[ 1 , 2 ] \n"), "ok: [1,2]")
        XCTAssertEqual(try self.decoding(#" { "a" : [ true , false , null ] } "#), #"ok: {"a":[true,false,null]}"#)
        XCTAssertEqual(try self.decoding("\"x\""), #"ok: "x""#)
    }

    func testDecodeNeedsAString() throws {
        let error = try XCTUnwrap(try self.failure("json.decode", "nil"))
        XCTAssertTrue(error.hasSuffix("(string expected, got nil)"), error)
    }

    func testUncaughtErrorsAreScriptErrorsOnTheCallingLine() throws {
        let error = try XCTUnwrap(expectScriptError { () throws(ScriptError) in
            try self.lua.run("local x = 1\nreturn json.decode('{bad')", chunkName: "json_test.lua")
        })
        XCTAssertEqual(error.kind, .runtime)
        XCTAssertEqual(error.message, "json.decode: expected a string key or '}' at byte 2")
        XCTAssertEqual(error.line, 2)
    }

    // MARK: - Depth

    func testNestingDeeperThan1000IsAnError() throws {
        XCTAssertEqual(try self.eval("return #json.encode(json.decode(('['):rep(1000) .. (']'):rep(1000)))"), "2000")
        XCTAssertEqual(try self.failure("json.decode", "('['):rep(1001) .. (']'):rep(1001)"), "json.decode: nesting deeper than 1000")
        XCTAssertEqual(
            try self.failure("json.decode", #"('{"a":'):rep(1001) .. '1' .. ('}'):rep(1001)"#),
            "json.decode: nesting deeper than 1000"
        )
        XCTAssertEqual(try self.failure("json.decode", "('['):rep(100000)"), "json.decode: nesting deeper than 1000")

        // A table holding `depth` tables nested one in the other, as `t`.
        func nested(_ depth: Int) -> String {
            "local t = {} local cur = t for _ = 1, \(depth) do cur[1] = {} cur = cur[1] end "
        }
        XCTAssertEqual(try self.eval(nested(999) + "return #json.encode(t)"), "2000")
        XCTAssertEqual(
            try self.failure("json.encode", "t", setup: nested(1000)),
            "json.encode: nesting deeper than 1000 (a table that contains itself?)"
        )
    }

    func testCyclesAreCaughtByTheDepthLimit() throws {
        XCTAssertEqual(
            try self.failure("json.encode", "t", setup: "local t = {} t.self = t"),
            "json.encode: nesting deeper than 1000 (a table that contains itself?)"
        )
        XCTAssertEqual(
            try self.failure("json.encode", "t", setup: "local t = json.array() t[1] = t"),
            "json.encode: nesting deeper than 1000 (a table that contains itself?)"
        )
    }

    // MARK: - Larger documents

    func testLargeDocumentsRoundTrip() throws {
        XCTAssertEqual(
            try self.eval("""
                local items = json.array()
                for i = 1, 5000 do
                  items[i] = { id = i, name = "item " .. i, score = i / 7, tags = json.array({ "a", "b" }) }
                end
                local back = json.decode(json.encode(items))
                local item = back[4321]
                return table.concat({ #back, item.id, math.type(item.id), tostring(item.score == 4321 / 7),
                                      item.name, json.encode(item.tags) }, " ")
                """),
            #"5000 4321 integer true item 4321 ["a","b"]"#
        )
        XCTAssertEqual(
            try self.eval(#"local s = ('ab"c\n'):rep(100000) return tostring(json.decode(json.encode(s)) == s)"#),
            "true"
        )
    }

    // MARK: - Memory cap

    func testEncodingPastTheMemoryCapIsAMemoryError() throws {
        let limit = 16 << 20
        let lua = try LuaState(scriptName: "json.lua", memoryLimit: limit)
        lua.openJSONAsGlobal()
        let build = """
            local s = ("x"):rep(2 * 1024 * 1024)
            local t = {}
            for i = 1, 20 do t[i] = s end
            """
        let error = try XCTUnwrap(expectScriptError { () throws(ScriptError) in
            try lua.run(build + "\nreturn json.encode(t)")
        })
        XCTAssertEqual(error.kind, .memory)
        XCTAssertTrue(error.message.contains("not enough memory"), error.message)
        XCTAssertLessThanOrEqual(lua.memoryInUse, limit)
        XCTAssertEqual(lua.top, 0)

        // A script's pcall catches it like any memory error, and the state stays usable.
        XCTAssertEqual(
            try lua.run(build + "\nlocal ok, err = pcall(json.encode, t)\nreturn tostring(ok) .. ' ' .. tostring(err)"),
            ["false not enough memory"]
        )
        XCTAssertEqual(try lua.run("collectgarbage() return json.encode({1, json.array()})"), ["[1,[]]"])
        XCTAssertLessThan(lua.memoryInUse, limit / 2)
    }

    func testDecodingPastTheMemoryCapIsAMemoryError() throws {
        let limit = 16 << 20
        let lua = try LuaState(scriptName: "json.lua", memoryLimit: limit)
        lua.openJSONAsGlobal()
        // 4 MB of text, far more than 16 MB once decoded into 100,000 tables.
        let build = #"local doc = "[" .. ('{"id":1234,"name":"abcdef","tags":[1,2,3]},'):rep(99999) .. '{"id":1}]'"#
        let error = try XCTUnwrap(expectScriptError { () throws(ScriptError) in
            try lua.run(build + "\nreturn #json.decode(doc)")
        })
        XCTAssertEqual(error.kind, .memory)
        XCTAssertTrue(error.message.contains("not enough memory"), error.message)
        XCTAssertLessThanOrEqual(lua.memoryInUse, limit)
        XCTAssertEqual(lua.top, 0)

        XCTAssertEqual(
            try lua.run(build + "\nlocal ok, err = pcall(json.decode, doc)\nreturn tostring(ok) .. ' ' .. tostring(err)"),
            ["false not enough memory"]
        )
        XCTAssertEqual(try lua.run(#"collectgarbage() return json.encode(json.decode('{"online":[]}'))"#), [#"{"online":[]}"#])
        XCTAssertLessThan(lua.memoryInUse, limit / 2)
    }
}
