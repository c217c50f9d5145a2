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
    let logger: Logger
    let ioGroup: MultiThreadedEventLoopGroup
    let scriptLoops = ScriptLoops()
    let connections = ConnectionRegistry()
    let endpoints = EndpointTable()
    let sessions = SessionStore()
    let metrics = HostMetrics()
    let activity = HostActivity()
    /// Scripts loaded and listening, and not shutting down: what `GET /readyz` reports.
    let readiness = NIOLockedValueBox(false)
    /// The TLS context new connections get; replaced when a reload reads renewed certificates.
    let tlsContext = NIOLockedValueBox<NIOSSLContext?>(nil)
    let services: HostServices
    let state = NIOLockedValueBox(State())

    struct State {
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
            outbound: ScriptOutbound(policy: configuration.limits.outbound, group: self.ioGroup, logger: logger),
            logger: logger
        )
        self.sessions.tally.limits = configuration.sessionLimits
        self.sessions.tally.attach(metrics: self.metrics)
    }

    /// Loads the scripts, then listens. Throws ``ScriptLoadFailure`` if any script is broken.
    /// Returns the bound port.
    @discardableResult
    public func start() async throws -> Int {
        if let settings = self.configuration.cluster {
            guard self.configuration.journalPath == nil else {
                throw ClusterStartupCheck.Failure(reason: "--journal and --cluster exclude each other: the cluster keeps sessions in PostgreSQL")
            }
            let cluster = try await Cluster.start(
                url: settings.url,
                schema: settings.schema,
                nodeID: settings.nodeID,
                port: self.configuration.port,
                metrics: ClusterMetrics(host: self.metrics),
                loop: self.ioGroup.next(),
                logger: self.logger
            )
            self.sessions.attach(cluster)
            cluster.startListening(
                wake: { [sessions] ids in sessions.pull(ids, cluster: cluster, wokenAt: .now()) },
                relay: { [endpoints, services] path, text, snapshot in
                    var batch = OutboundBatch(ioLoops: services.ioLoops)
                    let targets = endpoints.publishTargets(for: path)
                    if snapshot {
                        for target in targets where target.pathFilter == nil {
                            target.slot.snapshot = text
                        }
                    }
                    batch.appendBroadcast(.text(ByteBuffer(string: text)), to: targets, histories: .alreadyRecorded)
                    batch.flush()
                }
            )
            try await cluster.waitUntilListening(timeout: .seconds(10))
            self.logger.info("cluster: sessions in PostgreSQL at \(cluster.url), schema \(settings.schema)")
        }
        try await self.services.outbound.open(loop: self.ioGroup.next(), logger: self.logger)
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
        let listener = Listener(group: self.ioGroup, configuration: self.configuration, pipeline: self.childPipeline())
        let channel = try await listener.bindService()
        if let adminPort = self.configuration.adminPort {
            let admin = try await listener.bindAdmin(port: adminPort)
            self.state.withLockedValue { $0.adminChannel = admin }
            self.logger.info("admin listening on http://\(self.configuration.adminHost):\(admin.localAddress?.port ?? adminPort)")
        }
        let sweeper = self.sessions.startSweeping(on: self.ioGroup.next(), metrics: self.metrics)
        self.state.withLockedValue { state in
            state.serverChannel = channel
            state.sessionSweeper = sweeper
        }
        self.readiness.withLockedValue { $0 = true }
        let port = channel.localAddress?.port ?? self.configuration.port
        self.services.outbound.listening(host: self.configuration.host, port: port, tls: self.configuration.tlsFiles != nil)
        if let cluster = self.sessions.cluster {
            cluster.startHeartbeat(
                address: "\(self.configuration.host):\(port)",
                connections: { [connections] in connections.count },
                followed: { [sessions] in sessions.followed },
                resync: { [sessions] in try await sessions.resync(cluster: cluster) }
            )
        }
        let scheme = self.configuration.tlsFiles == nil ? "ws" : "wss"
        self.logger.info(
            "listening on \(scheme)://\(self.configuration.host):\(port)",
            metadata: ["endpoints": "\(self.endpoints.all.map(\.pattern.description).sorted().joined(separator: " "))"]
        )
        if self.configuration.sessionToken == nil, !OriginPolicy.isLoopbackBindHost(self.configuration.host) {
            self.logger.warning(
                "POST /sessions/{id}/events takes events from anyone who reaches \(self.configuration.host):\(port): set --session-token (or $MOONGATE_SESSION_TOKEN)"
            )
        }
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
        do {
            try await self.connections.whenEmpty(on: loop)
                .orTimeout(.interval(self.configuration.shutdownGrace), on: loop)
                .get()
        } catch {
            let left = self.connections.all
            self.logger.info("closing the sockets of clients that did not finish closing in time", metadata: ["connections": "\(left.count)"])
            for connection in left {
                // Awaited, so their on_close is queued before the scripts retire; one already
                // closed by now fails this close, which is fine.
                try? await connection.channel.close()
            }
        }
        await self.sessions.closeJournal()
        // A script stuck in C (a runaway pattern match, say) cannot be interrupted: do not let it
        // hold the exit hostage.
        let runtimes = self.state.withLockedValue { $0.runtimes }
        for runtime in runtimes {
            do {
                try await runtime.retire().orTimeout(.seconds(1), on: loop).get()
            } catch {
                self.logger.warning("\(runtime.file.displayName) did not stop within 1 s; exiting without it: \(error)")
            }
        }
        await self.sessions.cluster?.stop()
        await self.services.outbound.shutdown()
        _ = try? await loop.makeFutureWithTask { await self.scriptLoops.release(keeping: []) }
            .orTimeout(.seconds(1), on: loop).get()
        try? await self.ioGroup.shutdownGracefully()
    }


    func childPipeline() -> ChildPipeline {
        ChildPipeline(
            services: self.services,
            configuration: self.configuration,
            readiness: self.readiness,
            tlsContext: self.tlsContext,
            logger: self.logger
        )
    }
}
