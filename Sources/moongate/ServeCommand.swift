import ArgumentParser
import Foundation
import Logging
import MoongateCore
import ServiceLifecycle
import UnixSignals

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the endpoints declared by the scripts in a folder (the default command)."
    )

    @OptionGroup var scripts: ScriptOptions

    @Option(name: .long, help: "Address to listen on.")
    var host: String = "127.0.0.1"

    @Option(name: .long, help: "Port to listen on (0 picks a free one).")
    var port: Int = 8080

    @Option(name: .long, help: "Largest message a client may send, in bytes; larger ones are closed with 1009.")
    var maxMessageSize: Int = 1 << 20

    @Option(name: .long, help: "Bytes that may wait to be sent to one client before it is closed as too slow (1008).")
    var maxOutboundBuffer: Int = 1 << 20

    @Option(name: .long, help: "Open WebSocket connections accepted; past it, upgrades get HTTP 503.")
    var maxConnections: Int = 100_000

    @Option(name: .long, help: "Messages per second one client may send before it is closed with 1008 (0: no limit).")
    var maxMessageRate: Double = 10_000

    @Option(name: .long, help: "Seconds clients get to answer close 1001 on shutdown.")
    var shutdownGrace: Double = 3

    @Option(name: .long, help: "I/O event loop threads (default: one per core this process may use).")
    var ioThreads: Int?

    @Option(
        name: .long,
        help: "Bearer token required by POST /sessions/{id}/events (default: $MOONGATE_SESSION_TOKEN; unset: no token)."
    )
    var sessionToken: String?

    @Option(name: .long, help: "Bytes of events all sessions of this host may hold; past it appends get HTTP 507.")
    var sessionsMaxBytes: Int = 256 << 20

    @Option(name: .long, help: "Sessions this host may hold; past it, appends that would create one get HTTP 507.")
    var sessionsMaxCount: Int = 100_000

    @Option(name: .long, help: "SQLite file that keeps session histories across restarts (default: memory only).")
    var journal: String?

    @Option(
        name: .long,
        help: "Share sessions with other hosts through PostgreSQL: postgres://USER:PASSWORD@HOST:PORT/DATABASE (default: $MOONGATE_CLUSTER)."
    )
    var cluster: String?

    @Option(name: .long, help: "PostgreSQL schema for the cluster's tables, so that they can share a database.")
    var clusterSchema: String = "moongate"

    @Option(name: .long, help: "This host's name in the cluster (default: host name and port).")
    var nodeId: String?

    @Option(
        name: .long,
        help: "A browser origin allowed to connect (repeatable): same-origin (default), * or e.g. https://app.example.com. Endpoints may list their own."
    )
    var allowedOrigin: [String] = []

    @Option(name: .long, help: "Seconds a new connection has to send its complete HTTP request.")
    var handshakeTimeout: Double = 10

    @Option(name: .long, help: "Open WebSocket connections one remote address may hold; past it, upgrades get HTTP 429.")
    var maxConnectionsPerAddress: Int = 10_000

    @Option(name: .long, help: "PEM certificate chain: with --tls-key, serve wss:// and HTTPS (both re-read on SIGHUP).")
    var tlsCert: String?

    @Option(name: .long, help: "PEM private key for --tls-cert.")
    var tlsKey: String?

    @Option(name: .long, help: "Serve /metrics, health and the console on this separate port instead of the public one.")
    var adminPort: Int?

    @Option(name: .long, help: "Address of the admin listener.")
    var adminHost: String = "127.0.0.1"

    @Flag(
        name: .long,
        inversion: .prefixedNo,
        help: "The web console at /console: on the admin listener, or without one on the public listener for loopback clients only."
    )
    var console = true

    @Option(name: .long, help: "Write the host's process id to this file as it starts (removed when it stops), for kill -HUP $(cat FILE).")
    var pidFile: String?

    @Option(name: .long, help: "permessage-deflate for clients that offer it: on or off (endpoints may turn it off with compression = false).")
    var compression: Switch = .on

    enum Switch: String, ExpressibleByArgument {
        case on, off
    }

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        guard (0...65535).contains(self.port) else { throw ValidationError("--port must be 0...65535") }
        guard (1...ServerConfiguration.maximumMessageSize).contains(self.maxMessageSize) else {
            throw ValidationError("--max-message-size must be 1...\(ServerConfiguration.maximumMessageSize) bytes (1 GiB)")
        }
        guard self.sessionsMaxBytes > 0 else { throw ValidationError("--sessions-max-bytes must be positive") }
        guard self.sessionsMaxCount > 0 else { throw ValidationError("--sessions-max-count must be positive") }
        guard self.maxOutboundBuffer > 0 else { throw ValidationError("--max-outbound-buffer must be positive") }
        guard (1...1024).contains(self.ioThreads ?? 1) else { throw ValidationError("--io-threads must be 1...1024") }
        guard self.maxConnections > 0 else { throw ValidationError("--max-connections must be positive") }
        guard self.maxMessageRate >= 0, self.maxMessageRate.isFinite else {
            throw ValidationError("--max-message-rate must be a finite number >= 0")
        }
        guard (self.tlsCert == nil) == (self.tlsKey == nil) else {
            throw ValidationError("--tls-cert and --tls-key go together")
        }
        guard (0...65535).contains(self.adminPort ?? 0) else { throw ValidationError("--admin-port must be 0...65535") }
        guard self.handshakeTimeout > 0, self.handshakeTimeout <= ServerConfiguration.maximumSeconds else {
            throw ValidationError("--handshake-timeout must be a number of seconds > 0 and <= \(Int(ServerConfiguration.maximumSeconds))")
        }
        guard self.maxConnectionsPerAddress > 0 else { throw ValidationError("--max-connections-per-address must be positive") }
        guard self.shutdownGrace >= 0, self.shutdownGrace <= ServerConfiguration.maximumSeconds else {
            throw ValidationError("--shutdown-grace must be a number of seconds from 0 to \(Int(ServerConfiguration.maximumSeconds))")
        }
    }

    func run() async throws {
        ProcessSecrets.scrub()
        let logger = self.logging.bootstrap()
        // Before anything starts (nothing to stop if it fails), so it is there once the host says
        // it listens. Until HostService traps SIGHUP, one sent by a reader of the file is ignored
        // rather than fatal (the scripts being loaded then are the newest anyway).
        signal(SIGHUP, SIG_IGN)
        let pidFile = self.pidFile.map(PIDFile.init)
        try pidFile?.write()
        defer { pidFile?.remove() }
        FileDescriptorLimit.raiseToMaximum()
        var configuration = ServerConfiguration(
            host: self.host,
            port: self.port,
            scriptsDirectory: self.scripts.directory,
            limits: self.scripts.limits,
            maxMessageSize: self.maxMessageSize,
            maxOutboundBuffer: self.maxOutboundBuffer,
            maxConnections: self.maxConnections,
            maxMessageRate: self.maxMessageRate,
            shutdownGrace: self.shutdownGrace,
            ioThreads: self.ioThreads,
            sessionToken: self.sessionToken ?? ProcessSecrets.value(ProcessSecrets.sessionToken),
            journalPath: self.journal,
            allowedOrigins: self.allowedOrigin.isEmpty ? ["same-origin"] : self.allowedOrigin,
            handshakeTimeout: self.handshakeTimeout,
            maxConnectionsPerAddress: self.maxConnectionsPerAddress,
            tlsCertificatePath: self.tlsCert,
            tlsKeyPath: self.tlsKey,
            adminPort: self.adminPort,
            adminHost: self.adminHost,
            console: self.console
        )
        configuration.compression = self.compression == .on
        configuration.sessionsMaxBytes = self.sessionsMaxBytes
        configuration.sessionsMaxCount = self.sessionsMaxCount
        if let url = self.cluster ?? ProcessSecrets.value(ProcessSecrets.cluster).flatMap({ $0.isEmpty ? nil : $0 }) {
            configuration.cluster = ClusterConfiguration(url: url, schema: self.clusterSchema, nodeID: self.nodeId)
        }
        let server = MoongateServer(configuration: configuration, logger: logger)
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: HostService(server: server, logger: logger))],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        do {
            try await group.run()
        } catch let failure as ScriptLoadFailure {
            for error in failure.errors {
                logger.error("\(error)")
            }
            logger.error("not starting: fix the scripts above (moongate check \(self.scripts.directory) shows the same)")
            throw ExitCode(1)
        }
    }
}

/// Runs the server as a service: reloads on SIGHUP until a graceful shutdown (SIGTERM/SIGINT).
struct HostService: Service {
    let server: MoongateServer
    let logger: Logger

    func run() async throws {
        // Trap SIGHUP before listening, so an early reload request never kills the process.
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        do {
            try await self.server.start()
        } catch {
            await self.server.shutdown()
            throw error
        }
        for await _ in hangups.cancelOnGracefulShutdown() {
            self.logger.info("SIGHUP: reloading scripts")
            _ = await self.server.reload()
        }
        await self.server.shutdown()
        self.logger.info("stopped")
    }
}
