import CLua

extension LuaState {
    /// Calls `body` once per entry of the table at `index` (order unspecified), with the value on
    /// top of the stack; `key` is nil for a key that is not a string. The stack is as before
    /// after each call and at the end.
    public func forEachEntry(ofTableAt index: Int32, _ body: (_ key: String?) throws -> Void) rethrows {
        let table = lua_absindex(self.pointer, index)
        lua_pushnil(self.pointer)
        while lua_next(self.pointer, table) != 0 {
            // A key that is not a string is not converted (lua_next would lose its place).
            let key = lua_type(self.pointer, -2) == LUA_TSTRING ? self.string(at: -2) : nil
            do {
                try body(key)
            } catch {
                self.pop(2)
                throw error
            }
            self.pop()
        }
    }

    /// Pushes `table[key]` for the table at `index` without metamethods (`rawget`), so reading
    /// runs no script code and can raise no error outside a protected call.
    public func pushRawField(_ key: String, ofTableAt index: Int32) {
        let table = lua_absindex(self.pointer, index)
        self.push(key)
        _ = lua_rawget(self.pointer, table)
    }

    /// Pushes `rawget(table, key)` for the table at `index`, calls `body`, and pops it again.
    public func withField<Result>(_ key: String, ofTableAt index: Int32, _ body: () throws -> Result) rethrows -> Result {
        self.pushRawField(key, ofTableAt: index)
        defer { self.pop() }
        return try body()
    }

    /// The length of the sequence at `index`, without metamethods (`#` on a plain table).
    public func rawLength(at index: Int32) -> Int {
        Int(lua_rawlen(self.pointer, index))
    }

    /// Pushes `table[position]` (1-based) for the table at `index`, calls `body`, and pops it again.
    public func withElement<Result>(_ position: Int, ofTableAt index: Int32, _ body: () throws -> Result) rethrows -> Result {
        _ = lua_rawgeti(self.pointer, index, lua_Integer(position))
        defer { self.pop() }
        return try body()
    }
}

extension LuaState {
    /// `index` as an absolute stack position, which stays valid while values are pushed above it.
    public func absoluteIndex(_ index: Int32) -> Int32 {
        lua_absindex(self.pointer, index)
    }

    /// A key or value that is not a string, as Lua's `tostring` would show a number (and the
    /// type name otherwise), for messages; never calls a metamethod.
    public func describe(at index: Int32) -> String {
        if let integer = self.integer(at: index) { return String(integer) }
        if let number = self.number(at: index) { return String(number) }
        if let string = self.string(at: index) { return string }
        return self.typeName(at: index)
    }

    /// Lua's name for the type of the value at `index`: "nil", "number", "table", ...
    public func typeName(at index: Int32) -> String {
        String(cString: lua_typename(self.pointer, lua_type(self.pointer, index)))
    }
}
