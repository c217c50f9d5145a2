import LuaBridge
import NIOCore
import NIOWebSocket

/// One loaded script file: its Lua state lives on `loop`, a dedicated event loop that does no
/// I/O, so a slow script never stalls a socket and one script's callbacks run strictly in order.
/// Every method may be called from any thread; the work hops to `loop`.
final class ScriptRuntime: Sendable {
    let file: ScriptFile
    let specs: [EndpointSpec]
    /// The script's source followed by every module it required while loading: what a reload
    /// compares to tell a changed endpoint from an unchanged one.
    let loadedSource: [UInt8]
    let loop: any EventLoop
    /// nil once retired: late work is forwarded to whichever runtime now serves the endpoint.
    private let context: NIOLoopBoundBox<ScriptContext?>

    private init(
        file: ScriptFile,
        specs: [EndpointSpec],
        loadedSource: [UInt8],
        loop: any EventLoop,
        context: NIOLoopBoundBox<ScriptContext?>
    ) {
        self.file = file
        self.specs = specs
        self.loadedSource = loadedSource
        self.loop = loop
        self.context = context
    }

    /// Compiles and runs `file` in a fresh state on `loop`. Nothing is served until ``activate(slots:)``.
    static func load(_ file: ScriptFile, on loop: any EventLoop, services: HostServices) -> EventLoopFuture<ScriptRuntime> {
        loop.submit {
            let context = try ScriptContext(file: file, services: services)
            return ScriptRuntime(
                file: file,
                specs: context.specs,
                loadedSource: file.source + context.moduleSources.sorted { $0.key < $1.key }.flatMap { Array($0.key.utf8) + [0] + $0.value + [0] },
                loop: loop,
                context: NIOLoopBoundBox(context, eventLoop: loop)
            )
        }
    }

    /// Goes live on `slots` (one per spec, in order): watchers poll once right away and then on
    /// their interval, heartbeats and the script's own timers start.
    func activate(slots: [EndpointSlot]) -> EventLoopFuture<Void> {
        self.loop.submit {
            self.context.value?.activate(slots: slots, runtime: self, loop: self.loop)
        }
    }

    /// Stops every timer, cancels the callbacks waiting on I/O (their clients' work goes to the
    /// new version) and frees the Lua state once the work already queued has run.
    /// Stops this version; `rebinding` moves its kept endpoints to the new version first, in the
    /// same turn of the loop.
    func retire(rebinding: [(EndpointSlot, EndpointBinding)] = []) -> EventLoopFuture<Void> {
        self.loop.submit {
            for (slot, binding) in rebinding {
                slot.binding = binding
            }
            self.context.value?.stop()
            self.context.value = nil
        }
    }

    func withContext(_ body: (ScriptContext) -> Void) {
        if let context = self.context.value {
            body(context)
        }
    }

    // MARK: Connection events, from the I/O loops

    /// Runs the endpoint's `authorize` hook for a handshake (which may wait on I/O).
    func authorize(_ request: AuthorizationRequest, index: Int) -> EventLoopFuture<AuthorizationDecision> {
        let promise = self.loop.makePromise(of: AuthorizationDecision.self)
        self.loop.execute {
            guard let context = self.context.value else {
                return promise.succeed(.deny(status: 503, reason: "the endpoint is reloading: try again"))
            }
            context.authorize(request, index: index) { promise.succeed($0) }
        }
        return promise.futureResult
    }

    func connect(_ connection: Connection) {
        self.loop.execute {
            guard let context = self.context.value, let index = context.index(of: connection.slot) else {
                return self.forward(connection) { $0.connect(connection) }
            }
            context.open(connection, index: index)
        }
    }

    func deliver(_ messages: [InboundMessage], from connection: Connection) {
        self.loop.execute {
            guard let context = self.context.value, let index = context.index(of: connection.slot) else {
                return self.forward(connection) { $0.deliver(messages, from: connection) }
            }
            context.receive(messages, from: connection, index: index)
        }
    }

    func disconnect(_ connection: Connection, code: WebSocketErrorCode?) {
        self.loop.execute {
            guard let context = self.context.value, let index = context.index(of: connection.slot) else {
                return self.forward(connection) { $0.disconnect(connection, code: code) }
            }
            context.closed(connection, index: index, code: code)
        }
    }

    /// A reload replaced this runtime after the event was queued: pass it to the current one.
    private func forward(_ connection: Connection, _ body: (ScriptRuntime) -> Void) {
        guard let binding = connection.slot.binding, binding.runtime !== self else { return }
        body(binding.runtime)
    }
}
