import Foundation
import LuaBridge
import Logging
import NIOCore
import NIOWebSocket

/// Everything one script file owns, confined to the script's event loop: its Lua state, the
/// frames it produced in the current task, its watchers and timers.
final class ScriptContext {
    enum DispatchFunction: String, CaseIterable {
        case describe, authorize, open, text, binary, close, poll, heartbeat, timer
        case failedMessage = "failed_message"

        /// How `moongate_lua_call_duration_seconds` labels calls.
        var metricKind: String {
            switch self {
            case .text, .binary, .close, .failedMessage: return "handler"
            case .open: return "initial"
            case .poll: return "poll"
            case .timer: return "timer"
            case .heartbeat: return "heartbeat"
            case .authorize: return "authorize"
            case .describe: return "load"
            }
        }
    }

    let file: ScriptFile
    let services: HostServices
    let lua: LuaState
    private(set) var specs: [EndpointSpec]
    let logger: Logger
    private(set) var readableRoots: [String]
    private var dispatch: [DispatchFunction: Int32] = [:]

    /// Set on activation; indexes match `specs`.
    private(set) var slots: [EndpointSlot] = []
    weak var runtime: ScriptRuntime?
    var batch: OutboundBatch
    var timers: [Int: ScriptTimer] = [:]
    /// Timers a script started while loading; they start when the script goes live.
    var pendingTimers: [(id: Int, seconds: Double, repeats: Bool)] = []
    private var tasks: [RepeatedTask] = []
    private var lastPollError: [Int: String] = [:]

    init(file: ScriptFile, services: HostServices) throws(ScriptError) {
        self.file = file
        self.services = services
        self.batch = OutboundBatch(ioLoops: services.ioLoops)
        var logger = services.logger
        logger[metadataKey: "script"] = "\(file.displayName)"
        self.logger = logger
        self.readableRoots = ([file.directory] + services.limits.readableDirectories).map(Self.canonicalPath)
        self.lua = try LuaState(
            scriptName: file.displayName,
            memoryLimit: services.limits.memoryBytes,
            instructionBudget: services.limits.instructionBudget
        )
        self.specs = []
        self.lua.setContext(Unmanaged.passUnretained(self).toOpaque())

        try self.lua.load(source: Array(Prelude.source.utf8), chunkName: Prelude.chunkName)
        self.lua.withoutMemoryLimit {
            self.lua.newTable()
            HostFunctions.register(in: self.lua)
            self.lua.pushHostLibraries()
        }
        try self.lua.call(arguments: 3, results: 1)
        for function in DispatchFunction.allCases {
            self.lua.pushField(function.rawValue, ofTableAt: -1)
            self.dispatch[function] = self.lua.popReference()
        }
        self.lua.pop()

        try self.lua.load(source: file.source, chunkName: file.displayName)
        try self.lua.call(arguments: 0, results: 0)
        self.specs = try self.describe()
    }

    /// Acks and error replies, by their first bytes (messages out are counted when written).
    private static func countKind(of reply: ByteBuffer, on connection: Connection) {
        let head = reply.getString(at: reply.readerIndex, length: min(16, reply.readableBytes)) ?? ""
        if head.hasPrefix(#"{"type":"ack""#) {
            connection.slot.metrics.acks.increment()
        } else if head.hasPrefix(#"{"type":"error""#) {
            connection.slot.metrics.errorReplies.increment()
        }
    }

    static func current(_ state: OpaquePointer) -> ScriptContext {
        Unmanaged<ScriptContext>.fromOpaque(LuaState.context(of: state)!).takeUnretainedValue()
    }

    private func describe() throws(ScriptError) -> [EndpointSpec] {
        try self.call(.describe, results: 1) { _ in 0 }
        defer { self.lua.pop() }
        let data = Data(self.lua.string(at: -1)?.utf8 ?? "[]".utf8)
        var specs: [EndpointSpec]
        do {
            specs = try JSONDecoder().decode([EndpointSpec].self, from: data)
        } catch {
            throw ScriptError(kind: .definition, script: self.file.displayName, line: nil, message: "\(error)")
        }
        // `return endpoint { ... }` is a tail call, which leaves no frame to name a line.
        specs = specs.map { spec in
            var spec = spec
            if spec.where == "?" { spec.where = self.file.displayName }
            return spec
        }
        if specs.isEmpty {
            throw ScriptError(
                kind: .definition,
                script: self.file.displayName,
                line: nil,
                message: "declares no endpoint: call endpoint { path = \"/...\", ... }"
            )
        }
        return specs
    }

    // MARK: Calls into Lua

    /// Pushes the dispatch function, then the arguments `pushArguments` pushes (returning their
    /// count), and calls it under the budget. On success `results` values are on the stack.
    @discardableResult
    func call(
        _ function: DispatchFunction,
        results: Int32,
        _ pushArguments: (LuaState) -> Int32
    ) throws(ScriptError) -> Int32 {
        let arguments = self.lua.withoutMemoryLimit {
            self.lua.pushReference(self.dispatch[function]!)
            return pushArguments(self.lua)
        }
        let started = NIODeadline.now()
        defer {
            self.services.metrics.recordLuaCall(
                script: self.file.displayName,
                kind: function.metricKind,
                nanoseconds: (NIODeadline.now() - started).nanoseconds
            )
        }
        try self.lua.call(arguments: arguments, results: results)
        return results
    }

    func index(of slot: EndpointSlot) -> Int? {
        self.slots.firstIndex { $0 === slot }.map { $0 + 1 }
    }

    func slot(at index: Int) -> EndpointSlot? {
        self.slots.indices.contains(index - 1) ? self.slots[index - 1] : nil
    }

    // MARK: Connections

    func authorize(_ request: AuthorizationRequest, index: Int) -> AuthorizationDecision {
        do {
            try self.call(.authorize, results: 4) { lua in
                lua.push(index)
                lua.push(request.path)
                lua.push(request.params)
                lua.push(request.query)
                lua.push(request.headers)
                lua.push(request.remoteAddress)
                return 6
            }
            defer { self.lua.pop(4) }
            if self.lua.bool(at: -4) {
                return .allow(auth: self.lua.string(at: -1))
            }
            return .denied(status: self.lua.integer(at: -3), reason: self.lua.string(at: -2))
        } catch {
            self.report(error, while: "authorizing a handshake (denied)", endpoint: index, connection: nil)
            return .denied(status: 403, reason: "authorization failed")
        }
    }

    func open(_ connection: Connection, index: Int) {
        var initial: WebSocketFrame?
        do {
            try self.call(.open, results: 1) { lua in
                lua.push(index)
                lua.push(Int(connection.id))
                return 2
            }
            initial = self.lua.withBytes(at: -1) { WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(bytes: $0)) }
            self.lua.pop()
            if initial == nil, self.specs[index - 1].watchEvery != nil, let snapshot = connection.slot.snapshot {
                initial = .text(snapshot)
            }
        } catch {
            self.report(error, while: "computing the initial payload", endpoint: index, connection: connection)
            initial = .text(MessageRouting.error("initial payload failed"))
        }
        self.batch.append(.join(connection, initial: initial))
        self.batch.flush()
    }

    func receive(_ messages: [InboundMessage], from connection: Connection, index: Int) {
        for message in messages {
            switch message {
            case .text(let buffer, let id):
                self.handleText(buffer, id: id, from: connection, index: index)
            case .binary(let buffer):
                self.handleBinary(buffer, from: connection, index: index)
            }
        }
        self.batch.append(.completed(connection))
        self.batch.flush()
    }

    private func handleText(_ buffer: ByteBuffer, id: String?, from connection: Connection, index: Int) {
        do {
            try self.call(.text, results: 1) { lua in
                lua.push(index)
                lua.push(Int(connection.id))
                buffer.withUnsafeReadableBytes { lua.push(bytes: $0) }
                lua.push(id)
                return 4
            }
            if let reply = self.lua.withBytes(at: -1, { ByteBuffer(bytes: $0) }) {
                self.batch.append(.send(connection, WebSocketFrame(fin: true, opcode: .text, data: reply)))
                Self.countKind(of: reply, on: connection)
            }
            self.lua.pop()
        } catch {
            connection.slot.metrics.errorReplies.increment()
            let type = self.failedMessageType()
            let what = type.map { "handling a \"\($0)\" message" } ?? "handling a message"
            self.report(error, while: what, endpoint: index, connection: connection)
            let text = error.kind == .budget ? "handler ran too long" : "handler failed"
            self.batch.append(.send(connection, .text(MessageRouting.error(text, id: id))))
        }
    }

    private func handleBinary(_ buffer: ByteBuffer, from connection: Connection, index: Int) {
        do {
            try self.call(.binary, results: 2) { lua in
                lua.push(index)
                lua.push(Int(connection.id))
                buffer.withUnsafeReadableBytes { lua.push(bytes: $0) }
                return 3
            }
            let isBinary = self.lua.bool(at: -1)
            if let reply = self.lua.withBytes(at: -2, { ByteBuffer(bytes: $0) }) {
                let frame = WebSocketFrame(fin: true, opcode: isBinary ? .binary : .text, data: reply)
                self.batch.append(.send(connection, frame))
            }
            self.lua.pop(2)
        } catch {
            self.report(error, while: "handling a binary message", endpoint: index, connection: connection)
            self.batch.append(.send(connection, .text(MessageRouting.error("handler failed"))))
        }
    }

    private func failedMessageType() -> String? {
        do {
            try self.call(.failedMessage, results: 1) { _ in 0 }
            defer { self.lua.pop() }
            return self.lua.string(at: -1)
        } catch {
            return nil
        }
    }

    func closed(_ connection: Connection, index: Int, code: WebSocketErrorCode?) {
        do {
            try self.call(.close, results: 0) { lua in
                lua.push(index)
                lua.push(Int(connection.id))
                if let code {
                    lua.push(Int(UInt16(webSocketErrorCode: code)))
                } else {
                    lua.pushNil()
                }
                return 3
            }
        } catch {
            self.report(error, while: "running on_close", endpoint: index, connection: connection)
        }
        self.batch.flush()
    }

    // MARK: Going live and stopping

    func activate(slots: [EndpointSlot], runtime: ScriptRuntime, loop: any EventLoop) {
        self.slots = slots
        self.runtime = runtime
        for (offset, spec) in self.specs.enumerated() {
            let index = offset + 1
            if let every = spec.watchEvery {
                self.poll(index)
                self.tasks.append(
                    loop.scheduleRepeatedTask(initialDelay: .interval(every), delay: .interval(every)) {
                        [weak runtime] _ in runtime?.withContext { $0.poll(index) }
                    }
                )
            }
            if let every = spec.heartbeatEvery {
                self.tasks.append(
                    loop.scheduleRepeatedTask(initialDelay: .interval(every), delay: .interval(every)) {
                        [weak runtime] _ in runtime?.withContext { $0.heartbeat(index) }
                    }
                )
            }
        }
        for timer in self.pendingTimers {
            self.startTimer(id: timer.id, seconds: timer.seconds, repeats: timer.repeats)
        }
        self.pendingTimers = []
        self.batch.flush()
    }

    func stop() {
        self.tasks.forEach { $0.cancel() }
        self.tasks = []
        self.timers.values.forEach { $0.cancel() }
        self.timers = [:]
    }

    func startTimer(id: Int, seconds: Double, repeats: Bool) {
        guard let runtime else {
            self.pendingTimers.append((id, seconds, repeats))
            return
        }
        let loop = runtime.loop
        let delay = TimeAmount.interval(seconds)
        if repeats {
            self.timers[id] = .repeating(
                loop.scheduleRepeatedTask(initialDelay: delay, delay: delay) { [weak runtime] _ in
                    runtime?.withContext { $0.fireTimer(id) }
                }
            )
        } else {
            self.timers[id] = .once(
                loop.scheduleTask(in: delay) { [weak runtime] in
                    runtime?.withContext { context in
                        context.timers[id] = nil
                        context.fireTimer(id)
                    }
                }
            )
        }
    }

    private func fireTimer(_ id: Int) {
        do {
            try self.call(.timer, results: 0) { lua in
                lua.push(id)
                return 1
            }
        } catch {
            self.report(error, while: "running a timer", endpoint: nil, connection: nil)
        }
        self.batch.flush()
    }

    private func poll(_ index: Int) {
        let slot = self.slots[index - 1]
        do {
            try self.call(.poll, results: 1) { lua in
                lua.push(index)
                return 1
            }
            let value = self.lua.string(at: -1)
            self.lua.pop()
            if self.lastPollError.removeValue(forKey: index) != nil {
                self.logger.info("watcher recovered", metadata: ["endpoint": "\(slot.pattern)"])
            }
            guard let value, value != slot.snapshot else { return }
            slot.snapshot = value
            self.batch.appendBroadcast(.text(value), to: [(slot, nil)])
            self.batch.flush()
        } catch {
            // A poll that keeps failing the same way is logged once, not every tick.
            if self.lastPollError[index] != error.description {
                self.lastPollError[index] = error.description
                self.report(error, while: "polling (retried every tick)", endpoint: index, connection: nil)
            }
        }
    }

    private func heartbeat(_ index: Int) {
        let slot = self.slots[index - 1]
        do {
            try self.call(.heartbeat, results: 1) { lua in
                lua.push(index)
                return 1
            }
            if let value = self.lua.string(at: -1) {
                // Heartbeats are not part of an endpoint's history.
                self.batch.append(.broadcast(slot.fanout, frame: self.batch.serialize(.text(value)), pathFilter: nil))
            }
            self.lua.pop()
        } catch {
            self.report(error, while: "building the heartbeat", endpoint: index, connection: nil)
        }
        self.batch.flush()
    }

    // MARK: Errors and files

    func report(_ error: ScriptError, while activity: String, endpoint index: Int?, connection: Connection?) {
        self.services.metrics.count("moongate_lua_errors_total", [("script", self.file.displayName), ("kind", error.kind.rawValue)])
        var metadata: Logger.Metadata = ["kind": "\(error.kind.rawValue)"]
        if let index, self.specs.indices.contains(index - 1) {
            metadata["endpoint"] = "\(self.specs[index - 1].path)"
        }
        if let connection {
            metadata["connection"] = "\(connection.id)"
        }
        self.logger.error("\(error) (while \(activity))", metadata: metadata)
        if let traceback = error.traceback {
            self.logger.debug("\(traceback)", metadata: metadata)
        }
    }

    /// `path` resolved against the script's folder, if it lies inside a readable directory.
    func readablePath(_ path: String) -> String? {
        let base = URL(fileURLWithPath: self.file.directory, isDirectory: true)
        let resolved = Self.canonicalPath(URL(fileURLWithPath: path, relativeTo: base).path)
        return self.readableRoots.contains { resolved == $0 || resolved.hasPrefix($0 + "/") } ? resolved : nil
    }

    private static func canonicalPath(_ path: String) -> String {
        URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path
    }
}

@available(*, unavailable)
extension ScriptContext: Sendable {}

/// A script's `every` or `after` timer.
enum ScriptTimer {
    case once(Scheduled<Void>)
    case repeating(RepeatedTask)

    func cancel() {
        switch self {
        case .once(let scheduled): scheduled.cancel()
        case .repeating(let task): task.cancel()
        }
    }
}
