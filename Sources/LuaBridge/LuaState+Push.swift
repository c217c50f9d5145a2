public import CLua
import LuaJSON

extension LuaState {
    public func pushNil() { lua_pushnil(self.pointer) }

    public func push(_ value: Bool) { lua_pushboolean(self.pointer, value ? 1 : 0) }

    public func push(_ value: Int) { lua_pushinteger(self.pointer, lua_Integer(value)) }

    public func push(_ value: Double) { lua_pushnumber(self.pointer, value) }

    public func push(_ value: String) {
        var value = value
        value.withUTF8 { bytes in
            bytes.withMemoryRebound(to: CChar.self) { chars in
                _ = lua_pushlstring(self.pointer, chars.baseAddress, chars.count)
            }
        }
    }

    public func push(bytes: UnsafeRawBufferPointer) {
        _ = lua_pushlstring(self.pointer, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
    }

    public func push(_ value: String?) {
        if let value {
            self.push(value)
        } else {
            self.pushNil()
        }
    }

    /// Pushes a table of string keys to string values.
    public func push(_ table: [String: String]) {
        lua_createtable(self.pointer, 0, Int32(clamping: table.count))
        for (key, value) in table {
            self.push(value)
            lua_setfield(self.pointer, -2, key)
        }
    }

    public func push(function: moongate_swift_function) {
        moongate_push_swift_function(self.pointer, function)
    }

    /// Registers `functions` as fields of the table on top of the stack.
    public func setFunctions(_ functions: [(name: String, function: moongate_swift_function)]) {
        for (name, function) in functions {
            self.push(function: function)
            lua_setfield(self.pointer, -2, name)
        }
    }

    public func pushGlobal(_ name: String) {
        _ = lua_getglobal(self.pointer, name)
    }

    /// Pushes `table[key]` for the table at `index`.
    public func pushField(_ key: String, ofTableAt index: Int32) {
        _ = lua_getfield(self.pointer, index, key)
    }

    /// Pops the top value into the registry and returns its reference.
    public func popReference() -> Int32 {
        luaL_ref(self.pointer, moongate_registryindex())
    }

    public func pushReference(_ reference: Int32) {
        _ = lua_rawgeti(self.pointer, moongate_registryindex(), lua_Integer(reference))
    }

    public func releaseReference(_ reference: Int32) {
        luaL_unref(self.pointer, moongate_registryindex(), reference)
    }
}

extension LuaState {
    public func newTable() { moongate_newtable(self.pointer) }

    /// Pushes the JSON codec, the debug module and the budget's `charge`, which only the host's
    /// prelude receives (it hands scripts what they may have of them).
    public func pushHostLibraries() {
        _ = moongate_json_open(self.pointer)
        moongate_push_host_libraries(self.pointer)
    }
}
