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

        /// How `moongate_lua_call_duration_seconds` labels calls.
        var metricKind: String {
            switch self {
            case .text, .binary, .close: return "handler"
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
    /// The sources of the modules the script's top level required, by chunk name.
    var moduleSources: [String: [UInt8]] = [:]
    /// Whether the script's top level is running (it goes live on activation).
    var isLoading: Bool { self.runtime == nil }
    let services: HostServices
    let lua: LuaState
    private(set) var specs: [EndpointSpec]
    let logger: Logger
    private(set) var readableRoots: [String]
    private var dispatchReferences: [DispatchFunction: Int32] = [:]

    /// Set on activation; indexes match `specs`.
    var slots: [EndpointSlot] = []
    weak var runtime: ScriptRuntime?
    var batch: OutboundBatch
    var timers: [Int: ScriptTimer] = [:]
    /// Timers a script started while loading; they start when the script goes live.
    var pendingTimers: [(id: Int, seconds: Double, repeats: Bool)] = []
    var tasks: [RepeatedTask] = []
    var lastPollError: [Int: String] = [:]

    // Callbacks waiting on I/O (ScriptContext+Waiting).
    var waitingCallbacks: [Int: WaitingCallback] = [:]
    /// The call a host function started in the callback running now, which yields to wait for it.
    var startedOperation: ScriptOperation?
    var isRunningCallback = false
    /// Set once the script is retiring: no new I/O call starts.
    var isStopping = false
    var lastOperation = 0
    /// Connections one of whose callbacks waits: what they sent meanwhile, in order
    /// (ScriptContext+Connections).
    var backlogs: [UInt64: [ConnectionWork]] = [:]
    /// Clients gone from the registry whose `on_close` has not finished yet: a callback that
    /// waited past the disconnect still reads their `params`, `headers`, ...
    var departed: [UInt64: Connection] = [:]
    /// Watchers, heartbeats and timers whose last run still waits: the next tick skips them.
    var busyTicks: Set<Tick> = []
    /// Those whose overrun was logged, until one run finishes in time again.
    var overrunLogged: Set<Tick> = []

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
        self.lua.timeLimit = services.limits.callTimeout
        self.specs = []
        self.lua.setContext(Unmanaged.passUnretained(self).toOpaque())

        try self.lua.load(source: Prelude.source, chunkName: Prelude.chunkName)
        self.lua.withoutMemoryLimit {
            self.lua.newTable()
            HostFunctions.register(in: self.lua)
            self.lua.pushHostLibraries()
        }
        try self.lua.call(arguments: 4, results: 1)
        for function in DispatchFunction.allCases {
            self.lua.pushField(function.rawValue, ofTableAt: -1)
            self.dispatchReferences[function] = self.lua.popReference()
        }
        self.lua.pop()

        try self.lua.load(source: file.source, chunkName: file.displayName)
        try self.lua.call(arguments: 0, results: 0)
        self.specs = try self.describe()
    }

    /// The line of a `file:line` location as the prelude records it (`?` when there is none).
    private static func line(ofLocation location: String) -> Int? {
        location.split(separator: ":").last.flatMap { Int($0) }.flatMap { $0 >= 1 ? $0 : nil }
    }

    static func current(_ state: OpaquePointer) -> ScriptContext {
        Unmanaged<ScriptContext>.fromOpaque(LuaState.context(of: state)!).takeUnretainedValue()
    }

    /// Reads every `endpoint { ... }` the script declared, straight from its state.
    private func describe() throws(ScriptError) -> [EndpointSpec] {
        try self.call(.describe, results: 1) { _ in 0 }
        defer { self.lua.pop() }
        let source = DefinitionSource(self.file.source)
        // Raw reads run no script code; without the memory cap no allocation can fail (and raise)
        // outside a protected call.
        let read: [Result<EndpointSpec, ScriptError>] = self.lua.withoutMemoryLimit {
            stride(from: 1, through: self.lua.rawLength(at: -1), by: 1).map { ordinal in
                self.lua.withElement(ordinal, ofTableAt: -1) { self.readDefinition(ordinal: ordinal, source: source) }
            }
        }
        var specs: [EndpointSpec] = []
        for result in read {
            specs.append(try result.get())
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

    /// The definition recorded on top of the stack (`{ def = ..., where = "file:line" }`).
    private func readDefinition(ordinal: Int, source: DefinitionSource) -> Result<EndpointSpec, ScriptError> {
        // `return endpoint { ... }` is a tail call, which leaves no frame to name a line.
        let reported = self.lua.withField("where", ofTableAt: -1) { self.lua.string(at: -1) }.flatMap(Self.line(ofLocation:))
        let line = reported ?? source.callLine(ordinal: ordinal)
        let location = line.map { "\(self.file.displayName):\($0)" } ?? self.file.displayName
        return self.lua.withField("def", ofTableAt: -1) {
            do throws(EndpointSchema.Violation) {
                return .success(try EndpointSchema.read(self.lua, definitionAt: -1, where: location))
            } catch {
                let fieldLine = line.flatMap { source.fieldLine(error.field, from: $0) }
                return .failure(
                    ScriptError(kind: .definition, script: self.file.displayName, line: fieldLine ?? line, message: "endpoint: \(error.message)")
                )
            }
        }
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
            self.lua.pushReference(self.dispatch(function))
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

    func dispatch(_ function: DispatchFunction) -> Int32 {
        self.dispatchReferences[function]!
    }

    func index(of slot: EndpointSlot) -> Int? {
        self.slots.firstIndex { $0 === slot }.map { $0 + 1 }
    }

    func slot(at index: Int) -> EndpointSlot? {
        index >= 1 && index <= self.slots.count ? self.slots[index - 1] : nil
    }

    // MARK: Errors and files

    func report(_ error: ScriptError, while activity: String, endpoint index: Int?, connection: Connection?) {
        self.services.metrics.count("moongate_lua_errors_total", [("script", self.file.displayName), ("kind", error.kind.rawValue)])
        var metadata: Logger.Metadata = ["kind": "\(error.kind.rawValue)"]
        let endpoint = index.flatMap { $0 >= 1 && $0 <= self.specs.count ? self.specs[$0 - 1].path : nil }
        if let endpoint {
            metadata["endpoint"] = "\(endpoint)"
        }
        self.services.activity.recordError(error, while: activity, endpoint: endpoint)
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
