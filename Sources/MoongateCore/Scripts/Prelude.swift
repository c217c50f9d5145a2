import LuaBridge

/// The Lua half of the script API (`prelude.lua` beside this file, compiled into the binary). It
/// runs in every script's state before the script itself and returns the dispatch table the host
/// calls into. Swift provides `host` (functions implemented in `HostFunctions.swift`), the JSON
/// codec, `debug` and the budget's `charge`; scripts see only what the prelude hands on of them.
enum Prelude {
    /// How errors and tracebacks name it; ``HostChunk`` tells it from script files.
    static let chunkName = HostChunk.prelude

    static var source: [UInt8] { PackageResources.prelude_lua }
}
