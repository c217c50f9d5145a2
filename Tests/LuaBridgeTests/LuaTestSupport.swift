import CLua
import LuaBridge
import XCTest

extension LuaState {
    /// The JSON codec as the global `json`, as the prelude hands it to scripts.
    func openJSONAsGlobal() {
        self.pushHostLibraries()  // json, debug, charge
        self.pop(2)
        lua_setglobal(self.pointer, "json")
    }

    /// Compiles `source` as `chunkName`, calls it with `arguments` pushed by `push`, and returns its
    /// results as strings (`tostring`-like for numbers and booleans), popping them.
    @discardableResult
    func run(
        _ source: String,
        chunkName: String = "test.lua",
        results: Int32 = 1,
        push: (LuaState) -> Int32 = { _ in 0 }
    ) throws(ScriptError) -> [String?] {
        try self.load(source: Array(source.utf8), chunkName: chunkName)
        let arguments = push(self)
        try self.call(arguments: arguments, results: results)
        var values: [String?] = []
        for index in stride(from: -results, through: -1, by: 1) {
            values.append(self.describe(at: index))
        }
        self.pop(results)
        return values
    }

    private func describe(at index: Int32) -> String? {
        switch self.type(at: index) {
        case .string: return self.string(at: index)
        case .number: return self.integer(at: index).map(String.init) ?? self.number(at: index).map { "\($0)" }
        case .boolean: return self.bool(at: index) ? "true" : "false"
        case .nil, .none: return nil
        case .table: return "table"
        case .function: return "function"
        case .other: return "other"
        }
    }
}

/// Runs `body`, which must throw a ScriptError, and returns it.
func expectScriptError(
    file: StaticString = #filePath,
    line: UInt = #line,
    _ body: () throws(ScriptError) -> Void
) -> ScriptError? {
    do {
        try body()
        XCTFail("expected a ScriptError", file: file, line: line)
        return nil
    } catch {
        return error
    }
}
