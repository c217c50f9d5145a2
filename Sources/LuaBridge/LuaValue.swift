import CLua
import LuaJSON

/// A Lua value built away from the state (on another thread, say) and pushed later: what an I/O
/// call hands back to the callback that waited for it.
public indirect enum LuaValue: Sendable, Equatable {
    case `nil`
    /// `json.null` (a light userdata holding NULL): a NULL that keeps its key in a table.
    case jsonNull
    case boolean(Bool)
    case integer(Int)
    case number(Double)
    case string([UInt8])
    /// A sequence, indexed from 1, which encodes as a JSON array even when empty.
    case array([LuaValue])
    /// A table with string keys.
    case table([(String, LuaValue)])

    public static func text(_ value: String) -> LuaValue { .string(Array(value.utf8)) }

    public static func == (left: LuaValue, right: LuaValue) -> Bool {
        switch (left, right) {
        case (.nil, .nil), (.jsonNull, .jsonNull): true
        case (.boolean(let a), .boolean(let b)): a == b
        case (.integer(let a), .integer(let b)): a == b
        case (.number(let a), .number(let b)): a == b
        case (.string(let a), .string(let b)): a == b
        case (.array(let a), .array(let b)): a == b
        case (.table(let a), .table(let b)): a.map(\.0) == b.map(\.0) && a.map(\.1) == b.map(\.1)
        default: false
        }
    }
}

extension LuaState {
    public func push(_ value: LuaValue) {
        switch value {
        case .nil:
            self.pushNil()
        case .jsonNull:
            lua_pushlightuserdata(self.pointer, nil)
        case .boolean(let value):
            self.push(value)
        case .integer(let value):
            self.push(value)
        case .number(let value):
            self.push(value)
        case .string(let bytes):
            bytes.withUnsafeBytes { self.push(bytes: $0) }
        case .array(let elements):
            _ = lua_checkstack(self.pointer, 2)
            lua_createtable(self.pointer, Int32(clamping: elements.count), 0)
            for (offset, element) in elements.enumerated() {
                self.push(element)
                lua_rawseti(self.pointer, -2, lua_Integer(offset + 1))
            }
            moongate_json_mark_array(self.pointer, -1)
        case .table(let fields):
            _ = lua_checkstack(self.pointer, 2)
            lua_createtable(self.pointer, 0, Int32(clamping: fields.count))
            for (key, field) in fields {
                self.push(field)
                lua_setfield(self.pointer, -2, key)
            }
        }
    }
}
