import CLua

extension LuaState {
    public enum ValueType: Equatable, Sendable {
        case none, `nil`, boolean, number, string, table, function, other
    }

    public func type(at index: Int32) -> ValueType {
        switch lua_type(self.pointer, index) {
        case LUA_TNONE: return .none
        case LUA_TNIL: return .nil
        case LUA_TBOOLEAN: return .boolean
        case LUA_TNUMBER: return .number
        case LUA_TSTRING: return .string
        case LUA_TTABLE: return .table
        case LUA_TFUNCTION: return .function
        default: return .other
        }
    }

    /// The string at `index`, only if the value is a string (numbers are not converted in place).
    public func string(at index: Int32) -> String? {
        guard lua_type(self.pointer, index) == LUA_TSTRING else { return nil }
        return self.withBytes(at: index) { String(decoding: $0, as: UTF8.self) }
    }

    /// Calls `body` with the bytes of the string at `index`, or returns nil if it is not a string.
    public func withBytes<Result>(at index: Int32, _ body: (UnsafeRawBufferPointer) -> Result) -> Result? {
        guard lua_type(self.pointer, index) == LUA_TSTRING else { return nil }
        var length = 0
        guard let chars = moongate_tolstring(self.pointer, index, &length) else { return nil }
        return body(UnsafeRawBufferPointer(start: chars, count: length))
    }

    public func number(at index: Int32) -> Double? {
        var isNumber: Int32 = 0
        let value = moongate_tonumber(self.pointer, index, &isNumber)
        return isNumber != 0 && lua_type(self.pointer, index) == LUA_TNUMBER ? value : nil
    }

    public func integer(at index: Int32) -> Int? {
        var isInteger: Int32 = 0
        let value = moongate_tointeger(self.pointer, index, &isInteger)
        return isInteger != 0 && lua_type(self.pointer, index) == LUA_TNUMBER ? Int(value) : nil
    }

    public func bool(at index: Int32) -> Bool {
        lua_toboolean(self.pointer, index) != 0
    }

    public func stringField(_ key: String, ofTableAt index: Int32) -> String? {
        _ = lua_getfield(self.pointer, index, key)
        defer { self.pop() }
        return self.string(at: -1)
    }

    public func integerField(_ key: String, ofTableAt index: Int32) -> Int? {
        _ = lua_getfield(self.pointer, index, key)
        defer { self.pop() }
        return self.integer(at: -1)
    }
}

extension LuaState {
    /// The value at `index` if it is a scalar (nil, a boolean, an integer, a float, a string, or
    /// `json.null`), for a host function that hands it on (a SQL parameter, say); nil otherwise.
    public func scalar(at index: Int32) -> LuaValue? {
        switch lua_type(self.pointer, index) {
        case LUA_TNIL, LUA_TNONE: return .nil
        case LUA_TBOOLEAN: return .boolean(self.bool(at: index))
        case LUA_TNUMBER:
            if lua_isinteger(self.pointer, index) != 0, let value = self.integer(at: index) {
                return .integer(value)
            }
            return self.number(at: index).map(LuaValue.number)
        case LUA_TSTRING: return self.withBytes(at: index) { .string(Array($0)) }
        case LUA_TLIGHTUSERDATA: return lua_touserdata(self.pointer, index) == nil ? .jsonNull : nil
        default: return nil
        }
    }
}
