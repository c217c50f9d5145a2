import Foundation
import Logging
import MoongateCore
import XCTest

/// A MoongateServer on a free port, serving Lua sources a test wrote into a fresh temporary folder.
/// Clients made through ``connect(_:headers:autoPong:)`` are closed by ``shutdown()``.
final class TestHost: Sendable {
    let directory: URL
    let server: MoongateServer
    let logs: LogCapture
    let port: Int
    private let clients = LockedState<[TestWebSocketClient]>([])
    private let isShutDown = LockedState(false)
    private let serverStopped = LockedState(false)

    private init(directory: URL, server: MoongateServer, logs: LogCapture, port: Int) {
        self.directory = directory
        self.server = server
        self.logs = logs
        self.port = port
    }

    /// Writes `files` (name → Lua source) and starts a server on them.
    static func start(
        _ files: [String: String],
        configure: (inout ServerConfiguration) -> Void = { _ in }
    ) async throws -> TestHost {
        let directory = try makeScriptsDirectory(files)
        var configuration = ServerConfiguration(
            host: "127.0.0.1",
            port: 0,
            scriptsDirectory: directory.path,
            shutdownGrace: 1
        )
        configure(&configuration)
        let logs = LogCapture()
        let server = MoongateServer(configuration: configuration, logger: logs.logger(label: "moongate.test"))
        let port: Int
        do {
            port = try await server.start()
        } catch {
            await server.shutdown()
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
        return TestHost(directory: directory, server: server, logs: logs, port: port)
    }

    /// A fresh folder named `scripts` (so errors read `scripts/<file>:<line>`) holding `files`.
    static func makeScriptsDirectory(_ files: [String: String]) throws -> URL {
        let root = FileManager.default.temporaryDirectory
            .appendingPathComponent("moongate-tests-\(UUID().uuidString)", isDirectory: true)
        let directory = root.appendingPathComponent("scripts", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for (name, source) in files {
            let file = directory.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(source.utf8).write(to: file)
        }
        return directory
    }

    func connect(
        _ path: String,
        headers: [String: String] = [:],
        autoPong: Bool = true,
        autoCloseReply: Bool = true
    ) async throws -> TestWebSocketClient {
        let client = try await TestWebSocketClient.connect(
            port: self.port,
            path: path,
            headers: headers,
            autoPong: autoPong,
            autoCloseReply: autoCloseReply
        )
        self.clients.withLock { $0.append(client) }
        return client
    }

    func write(file: String, source: String) throws {
        let url = self.directory.appendingPathComponent(file)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(source.utf8).write(to: url)
    }

    func remove(file: String) throws {
        try FileManager.default.removeItem(at: self.directory.appendingPathComponent(file))
    }

    func reload(timeout: Double = 10) async throws -> Result<ReloadSummary, ScriptLoadFailure> {
        let server = self.server
        return try await withTimeout(timeout, "reload") { await server.reload() }
    }

    var connectionCount: Int { self.server.connectionCount }

    /// Stops the server once (clients get close 1001). Idempotent on purpose: calling
    /// `MoongateServer.shutdown()` a second time schedules work on its already stopped event loops,
    /// which crashes a debug build ("leaking promise"), so tests never call it directly.
    func stopServer() async {
        let first = self.serverStopped.withLock { stopped in
            defer { stopped = true }
            return !stopped
        }
        if first {
            await self.server.shutdown()
        }
    }

    /// Stops the server, closes every test client and removes the folder.
    func shutdown() async {
        let first = self.isShutDown.withLock { done in
            defer { done = true }
            return !done
        }
        guard first else { return }
        await self.stopServer()
        for client in self.clients.withLock({ $0 }) {
            await client.shutdown()
        }
        try? FileManager.default.removeItem(at: self.directory.deletingLastPathComponent())
    }
}

/// Every log line of one server, searchable by the tests. Set MOONGATE_TEST_LOGS=1 to also print them.
final class LogCapture: Sendable {
    private let lines = LockedState<[String]>([])
    private let echo = ProcessInfo.processInfo.environment["MOONGATE_TEST_LOGS"] != nil

    func logger(label: String) -> Logger {
        var logger = Logger(label: label) { _ in CapturingLogHandler(capture: self) }
        logger.logLevel = .debug
        return logger
    }

    func append(_ line: String) {
        self.lines.withLock { $0.append(line) }
        if self.echo {
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
    }

    var all: [String] { self.lines.withLock { $0 } }

    func contains(_ text: String) -> Bool {
        self.lines.withLock { $0.contains { $0.contains(text) } }
    }

    /// Waits (bounded) for a log line containing `text`.
    func waitFor(_ text: String, timeout: Double = 5) async throws {
        let found = await eventually(timeout: timeout) { self.contains(text) }
        if !found {
            throw TestClientError.timeout("no log line containing \"\(text)\"")
        }
    }
}

private struct CapturingLogHandler: LogHandler {
    let capture: LogCapture
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .debug

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = self.metadata
        for (key, value) in event.metadata ?? [:] {
            merged[key] = value
        }
        let metadata = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        self.capture.append("\(event.level) \(event.message)\(metadata.isEmpty ? "" : " [\(metadata)]")")
    }
}

/// Base class: starts hosts that are shut down after the test, whatever happens.
class HostTestCase: XCTestCase {
    private let hosts = LockedState<[TestHost]>([])

    func startHost(
        _ files: [String: String],
        configure: (inout ServerConfiguration) -> Void = { _ in }
    ) async throws -> TestHost {
        let host = try await TestHost.start(files, configure: configure)
        self.hosts.withLock { $0.append(host) }
        return host
    }

    override func tearDown() async throws {
        for host in self.hosts.withLock({ hosts in
            defer { hosts = [] }
            return hosts
        }) {
            await host.shutdown()
        }
        try await super.tearDown()
    }
}
