import Foundation
public import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket

/// The host: binds the listener, serves the endpoints the scripts declare, reloads them, and
/// shuts down cleanly. See ARCHITECTURE.md for how the pieces fit.
public final class MoongateServer: Sendable {
    public let configuration: ServerConfiguration
    private let logger: Logger
    private let ioGroup: MultiThreadedEventLoopGroup
    private let scriptLoops = ScriptLoops()
    private let connections = ConnectionRegistry()
    private let endpoints = EndpointTable()
    private let sessions = SessionStore()
    private let metrics = HostMetrics()
    private let activity = HostActivity()
    /// Scripts loaded and listening, and not shutting down: what `GET /readyz` reports.
    private let readiness = NIOLockedValueBox(false)
    /// The TLS context new connections get; replaced when a reload reads renewed certificates.
    private let tlsContext = NIOLockedValueBox<NIOSSLContext?>(nil)
    private let services: HostServices
    private let state = NIOLockedValueBox(State())

    private struct State {
        var runtimes: [ScriptRuntime] = []
        var serverChannel: (any Channel)?
        var adminChannel: (any Channel)?
        var sessionSweeper: RepeatedTask?
        var isShutDown = false
    }

    public init(configuration: ServerConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.ioGroup = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.ioThreads))
        let ioLoops = Array(self.ioGroup.makeIterator())
        self.services = HostServices(
            connections: self.connections,
            endpoints: self.endpoints,
            sessions: self.sessions,
            metrics: self.metrics,
            activity: self.activity,
            ioLoops: ioLoops,
            keepAlive: KeepAliveWheels(loops: ioLoops),
            originRefusals: OriginRefusals(metrics: self.metrics),
            limits: configuration.limits,
            logger: logger
        )
    }

    /// Loads the scripts, then listens. Throws ``ScriptLoadFailure`` if any script is broken.
    /// Returns the bound port.
    @discardableResult
    public func start() async throws -> Int {
        let runtimes = try await ScriptLoader.load(
            directory: self.configuration.scriptsDirectory,
            loops: self.scriptLoops,
            services: self.services
        ).get()
        let summary = await self.install(runtimes)
        self.activity.recordReload(ok: true, summary: "started with \(summary.added.count) endpoints")
        if let files = self.configuration.tlsFiles {
            let context = try files.makeContext()
            self.tlsContext.withLockedValue { $0 = context }
        }
        if let path = self.configuration.journalPath {
            let journal = try await SessionJournal.open(path: path, eventLoop: self.ioGroup.next(), logger: self.logger)
            try await self.sessions.attach(journal)
            self.logger.info("session journal open", metadata: ["path": "\(path)", "sessions": "\(self.sessions.count)"])
        }
        let channel = try await self.bind()
        if let adminPort = self.configuration.adminPort {
            let admin = try await self.bindAdmin(port: adminPort)
            self.state.withLockedValue { $0.adminChannel = admin }
            self.logger.info("admin listening on http://\(self.configuration.adminHost):\(admin.localAddress?.port ?? adminPort)")
        }
        let sessions = self.sessions
        let metrics = self.metrics
        let sweeper = self.ioGroup.next().scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
            let totals = sessions.sweep()
            metrics.sessionsOpen.record(totals.sessions)
            metrics.sessionEventsBuffered.record(totals.events)
            metrics.sessionBytesBuffered.record(totals.bytes)
        }
        self.state.withLockedValue { state in
            state.serverChannel = channel
            state.sessionSweeper = sweeper
        }
        self.readiness.withLockedValue { $0 = true }
        let port = channel.localAddress?.port ?? self.configuration.port
        let scheme = self.configuration.tlsFiles == nil ? "ws" : "wss"
        self.logger.info(
            "listening on \(scheme)://\(self.configuration.host):\(port)",
            metadata: ["endpoints": "\(self.endpoints.all.map(\.pattern.description).sorted().joined(separator: " "))"]
        )
        if self.configuration.console {
            let http = self.configuration.tlsFiles == nil ? "http" : "https"
            let console =
                self.configuration.adminPort == nil
                ? "\(http)://\(self.configuration.host):\(port)/console (loopback clients only)"
                : "http://\(self.configuration.adminHost):\(self.adminPort ?? 0)/console"
            self.logger.info("console at \(console)")
        }
        return port
    }

    public var port: Int? {
        self.state.withLockedValue { $0.serverChannel?.localAddress?.port }
    }

    /// The admin listener's bound port, when there is one.
    public var adminPort: Int? {
        self.state.withLockedValue { $0.adminChannel?.localAddress?.port }
    }

    /// Number of open WebSocket connections.
    public var connectionCount: Int { self.connections.count }

    /// Compiles every script into fresh states; if all succeed, swaps them in without dropping a
    /// connection, else logs each error and keeps serving the old set unchanged.
    public func reload() async -> Result<ReloadSummary, ScriptLoadFailure> {
        let started = NIODeadline.now()
        self.reloadTLS()
        let loaded = await ScriptLoader.load(
            directory: self.configuration.scriptsDirectory,
            loops: self.scriptLoops,
            services: self.services
        )
        switch loaded {
        case .failure(let failure):
            self.metrics.count("moongate_reloads_total", [("result", "failed")])
            for error in failure.errors {
                self.logger.error("\(error)", metadata: ["kind": "\(error.kind.rawValue)"])
            }
            self.logger.error("reload failed: still serving the previous scripts", metadata: ["errors": "\(failure.errors.count)"])
            self.activity.recordReload(ok: false, summary: "still serving the previous scripts", errors: failure.errors)
            return .failure(failure)
        case .success(let runtimes):
            var summary = await self.install(runtimes)
            let elapsed = NIODeadline.now() - started
            summary.milliseconds = Int(elapsed.nanoseconds / 1_000_000)
            self.metrics.count("moongate_reloads_total", [("result", "ok")])
            self.metrics.reloadDuration.recordNanoseconds(elapsed.nanoseconds)
            self.logger.info("reloaded scripts: \(summary)")
            self.activity.recordReload(ok: true, summary: summary.description)
            return .success(summary)
        }
    }

    /// Stops accepting, sends every client close 1001, waits up to the grace period for the
    /// closing handshakes, then closes what is left and stops every loop.
    public func shutdown() async {
        let (alreadyShutDown, channel): (Bool, (any Channel)?) = self.state.withLockedValue { state in
            guard !state.isShutDown else { return (true, nil) }
            state.isShutDown = true
            state.sessionSweeper?.cancel()
            return (false, state.serverChannel)
        }
        guard !alreadyShutDown else { return }
        let admin = self.state.withLockedValue { $0.adminChannel }
        try? await admin?.close()
        self.readiness.withLockedValue { $0 = false }
        try? await channel?.close()
        let open = self.connections.all
        self.logger.info("shutting down", metadata: ["connections": "\(open.count)"])
        for connection in open {
            connection.close(code: .goingAway, reason: "server shutting down")
        }
        let loop = self.ioGroup.next()
        try? await self.connections.whenEmpty(on: loop)
            .orTimeout(.interval(self.configuration.shutdownGrace), on: loop)
            .get()
        for connection in self.connections.all {
            try? await connection.channel.close()
        }
        await self.sessions.closeJournal()
        // A script stuck in C (a runaway pattern match, say) cannot be interrupted: do not let it
        // hold the exit hostage.
        let runtimes = self.state.withLockedValue { $0.runtimes }
        for runtime in runtimes {
            _ = try? await runtime.retire().orTimeout(.seconds(1), on: loop).get()
        }
        _ = try? await loop.makeFutureWithTask { await self.scriptLoops.release(keeping: []) }
            .orTimeout(.seconds(1), on: loop).get()
        try? await self.ioGroup.shutdownGracefully()
    }

    /// Reads the certificate and key again; if they do not load, the current ones stay in use.
    private func reloadTLS() {
        guard let files = self.configuration.tlsFiles else { return }
        do {
            let context = try files.makeContext()
            self.tlsContext.withLockedValue { $0 = context }
            self.logger.info("TLS certificate reloaded", metadata: ["certificate": "\(files.certificatePath)"])
        } catch {
            self.logger.error("TLS certificate reload failed, keeping the previous one: \(error)")
        }
    }

    // MARK: Swapping script sets

    private func install(_ runtimes: [ScriptRuntime]) async -> ReloadSummary {
        var summary = ReloadSummary()
        let oldSlots = Dictionary(self.endpoints.all.map { ($0.pattern.shape, $0) }, uniquingKeysWith: { first, _ in first })
        var newSlots: [EndpointSlot] = []
        var rebinds: [(EndpointSlot, EndpointBinding)] = []
        for runtime in runtimes {
            var slots: [EndpointSlot] = []
            for (offset, spec) in runtime.specs.enumerated() {
                let binding = EndpointBinding(runtime: runtime, index: offset + 1, spec: spec)
                let pattern = PathPattern(spec.path)
                if let existing = oldSlots[pattern.shape], existing.pattern == pattern {
                    let old = existing.binding
                    if old?.spec == spec && old?.runtime.file.source == runtime.file.source {
                        summary.unchanged.append(spec.path)
                    } else {
                        summary.changed.append(spec.path)
                    }
                    rebinds.append((existing, binding))
                    existing.adoptHistory(spec.history)
                    slots.append(existing)
                } else {
                    let metrics = self.metrics.endpoint(spec.path)
                    let slot = EndpointSlot(
                        pattern: pattern,
                        fanout: Fanout(loops: self.services.ioLoops, metrics: metrics),
                        binding: binding,
                        metrics: metrics
                    )
                    slot.adoptHistory(spec.history)
                    summary.added.append(spec.path)
                    slots.append(slot)
                }
            }
            newSlots += slots
            try? await runtime.activate(slots: slots).get()
        }
        for (slot, binding) in rebinds {
            slot.binding = binding
        }

        self.endpoints.replace(with: newSlots)
        self.sessions.defaultSettings.withLockedValue { defaults in
            defaults = runtimes.lazy.flatMap(\.specs).compactMap(\.session).first ?? SessionSettings()
        }

        let kept = Set(newSlots.map(ObjectIdentifier.init))
        let removed = oldSlots.values.filter { !kept.contains(ObjectIdentifier($0)) }
        for slot in removed {
            summary.removed.append(slot.pattern.description)
            slot.binding = nil
        }
        let removedIDs = Set(removed.map(ObjectIdentifier.init))
        for connection in self.connections.all where removedIDs.contains(ObjectIdentifier(connection.slot)) {
            connection.close(code: .goingAway, reason: "endpoint removed")
        }

        let retired = self.state.withLockedValue { state in
            defer { state.runtimes = runtimes }
            return state.runtimes
        }
        for runtime in retired {
            try? await runtime.retire().get()
        }
        await self.scriptLoops.release(keeping: Set(runtimes.map(\.file.path)))
        return summary
    }

    // MARK: Listening

    private func bindAdmin(port: Int) async throws -> any Channel {
        let pipeline = self.childPipeline()
        return try await ServerBootstrap(group: self.ioGroup)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try pipeline.configureAdmin(channel)
                }
            }
            .bind(host: self.configuration.adminHost, port: port)
            .get()
    }

    private func childPipeline() -> ChildPipeline {
        ChildPipeline(
            services: self.services,
            configuration: self.configuration,
            readiness: self.readiness,
            tlsContext: self.tlsContext,
            logger: self.logger
        )
    }

    private func bind() async throws -> any Channel {
        let pipeline = self.childPipeline()
        return try await ServerBootstrap(group: self.ioGroup)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            // NIO keeps each channel's last receive buffer for reuse; an idle client should not
            // hold 2 KiB for it. The allocator still grows to 64 KiB under sustained reads.
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 65536))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try pipeline.configure(channel)
                }
            }
            .bind(host: self.configuration.host, port: self.configuration.port)
            .get()
    }
}

/// Checks a folder of scripts the way `moongate check` does: each in a fresh state, nothing served.
public func checkScripts(
    directory: String,
    limits: ScriptLimits = ScriptLimits(),
    logger: Logger
) async -> Result<[EndpointSpec], ScriptLoadFailure> {
    let loops = ScriptLoops()
    let result = await ScriptLoader.load(directory: directory, loops: loops, services: .offline(limits: limits, logger: logger))
    defer { Task { await loops.release(keeping: []) } }
    switch result {
    case .success(let runtimes):
        for runtime in runtimes {
            try? await runtime.retire().get()
        }
        return .success(runtimes.flatMap(\.specs))
    case .failure(let failure):
        return .failure(failure)
    }
}
