import Foundation
import LuaBridge
import MoongateCore
import NIOCore
import NIOEmbedded
import NIOWebSocket

// The pieces every message goes through, measured alone in this process (no sockets):
//   swift run -c release moongate-microbench [filter]
// One line per case (ns per operation, operations per second), then one JSON line.

let filter = CommandLine.arguments.dropFirst().first
var results: [Measure.Result] = []

@MainActor
func bench(_ name: String, operations: Int, _ body: () -> Void) {
    guard filter.map({ name.contains($0) }) ?? true else { return }
    let result = Measure(name: name, operations: operations).run(body)
    print(result.line)
    results.append(result)
}

let message = #"{"type":"event","id":42,"data":{"job":"build-7731","status":"running","progress":0.42,"tags":["ci","linux"]}}"#

// MARK: Lua

@MainActor
func luaState(_ source: String) -> LuaState {
    do {
        let lua = try LuaState(scriptName: "microbench.lua", memoryLimit: 64 << 20, instructionBudget: 50_000_000)
        try lua.load(source: Array(source.utf8), chunkName: "=microbench")
        lua.pushHostLibraries()  // the chunk's arguments: json, debug, charge
        try lua.call(arguments: 3, results: 0)
        return lua
    } catch {
        fatalError("\(error)")
    }
}

do {
    // A call from Swift into a Lua function and back, under the instruction budget, as the host
    // makes one per handled message.
    let lua = luaState("handler = function(kind, id) return id end")
    let calls = 10_000
    bench("lua call (Swift -> Lua -> Swift)", operations: calls) {
        for index in 0..<calls {
            lua.pushGlobal("handler")
            lua.push("event")
            lua.push(index)
            try! lua.call(arguments: 2, results: 1)
            lua.pop()
        }
    }
}

do {
    // The JSON codec inside Lua, on a typical 110-byte message.
    let lua = luaState(
        """
        local json = ...
        local text = [[\(message)]]
        local decoded = json.decode(text)
        decode = function(n) for _ = 1, n do json.decode(text) end end
        encode = function(n) for _ = 1, n do json.encode(decoded) end end
        """
    )
    let loops = 10_000
    for name in ["decode", "encode"] {
        bench("json \(name) (\(message.utf8.count)-byte message)", operations: loops) {
            lua.pushGlobal(name)
            lua.push(loops)
            try! lua.call(arguments: 1, results: 0)
        }
    }
}

// MARK: Frames and fan-out

do {
    // A broadcast is framed once into one buffer (ServerFrame).
    let payload = ByteBuffer(string: message)
    let frames = 10_000
    bench("frame encode (\(message.utf8.count)-byte text)", operations: frames) {
        for _ in 0..<frames {
            _ = ServerFrame.encode(.text, payload: payload)
        }
    }
}

for listeners in [1_000, 10_000] {
    // The same framed bytes written and flushed to N channels on one loop, as a fan-out does per
    // recipient; the channels are in memory, so this is the host's side of the cost only.
    let loop = EmbeddedEventLoop()
    let channels = (0..<listeners).map { _ in EmbeddedChannel(loop: loop) }
    for channel in channels {
        try! channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    }
    let framed = ServerFrame.encode(.text, payload: ByteBuffer(string: message))
    bench("fan-out one frame to \(listeners) channels (per delivery)", operations: listeners) {
        for channel in channels {
            channel.writeAndFlush(framed, promise: nil)
        }
        for channel in channels {
            while (try? channel.readOutbound(as: ByteBuffer.self)) ?? nil != nil {}
        }
    }
}

print("{" + results.map(\.json).joined(separator: ",") + "}")
