import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The built `moongate` executable end to end: signals, exit codes, and what it prints.
final class BinaryProcessTests: XCTestCase {
    private var processes: [ChildProcess] = []
    private var directories: [URL] = []
    private var clients: [TestWebSocketClient] = []

    override func tearDown() async throws {
        for client in self.clients {
            await client.shutdown()
        }
        for process in self.processes {
            await process.stop()
        }
        for directory in self.directories {
            try? FileManager.default.removeItem(at: directory.deletingLastPathComponent())
        }
        try await super.tearDown()
    }

    /// `<repo>/.build/debug/moongate`, found next to the test bundle or from this file's path.
    private static func binary() throws -> URL {
        var candidates: [URL] = []
        let bundle = Bundle.main.bundleURL
        candidates.append(bundle.appendingPathComponent("moongate"))
        candidates.append(bundle.deletingLastPathComponent().appendingPathComponent("moongate"))
        let repository = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent()  // MoongateCoreTests
            .deletingLastPathComponent()  // Tests
            .deletingLastPathComponent()
        candidates.append(repository.appendingPathComponent(".build/debug/moongate"))
        for candidate in candidates where FileManager.default.isExecutableFile(atPath: candidate.path) {
            return candidate
        }
        throw XCTSkip("no built moongate binary at \(candidates.map(\.path)); run `swift build` first")
    }

    private func launch(_ arguments: [String]) throws -> ChildProcess {
        let process = try ChildProcess(executable: Self.binary(), arguments: arguments)
        self.processes.append(process)
        return process
    }

    private func connect(port: Int, path: String) async throws -> TestWebSocketClient {
        let client = try await TestWebSocketClient.connect(port: port, path: path)
        self.clients.append(client)
        return client
    }

    private func scripts(_ files: [String: String]) throws -> URL {
        let directory = try TestHost.makeScriptsDirectory(files)
        self.directories.append(directory)
        return directory
    }

    private static func versioned(_ version: Int) -> String {
        """
        endpoint {
          path = "/v",
          on = { which = function(conn, msg) return { type = "version", version = \(version) } end },
        }
        """
    }

    func testServeReloadsOnSIGHUPKeepingConnectionsAndClosesWith1001OnSIGTERM() async throws {
        let directory = try self.scripts(["v.lua": Self.versioned(1)])
        let server = try self.launch(["serve", directory.path, "--port", "0", "--shutdown-grace", "1"])

        let listening = try await server.waitForStderr(containing: "listening on ws://127.0.0.1:")
        let port = try XCTUnwrap(Self.port(in: listening), listening)
        let client = try await self.connect(port: port, path: "/v")

        try await client.send(text: #"{"type":"which"}"#)
        let before = try await client.nextJSON()
        XCTAssertEqual(before["version"] as? Int, 1)

        try Data(Self.versioned(2).utf8).write(to: directory.appendingPathComponent("v.lua"))
        server.signal(SIGHUP)
        let reloaded = try await server.waitForStderr(containing: "reloaded scripts:")
        XCTAssertTrue(reloaded.contains("0 added, 1 changed, 0 removed"), reloaded)

        try await client.send(text: #"{"type":"which"}"#)
        let after = try await client.nextJSON()
        XCTAssertEqual(after["version"] as? Int, 2, "the connection survived the reload and uses the new handler")

        server.signal(SIGTERM)
        let code = try await client.nextClose(timeout: 10)
        XCTAssertEqual(code, 1001)
        try await client.waitForDisconnect()
        let status = try await server.waitForExit(timeout: 15)
        XCTAssertEqual(status, 0, server.stderr)
    }

    func testBrokenScriptOnSIGHUPKeepsServingTheOldVersion() async throws {
        let directory = try self.scripts(["v.lua": Self.versioned(1)])
        let server = try self.launch(["serve", directory.path, "--port", "0", "--shutdown-grace", "1"])
        let listening = try await server.waitForStderr(containing: "listening on ws://127.0.0.1:")
        let port = try XCTUnwrap(Self.port(in: listening), listening)
        let client = try await self.connect(port: port, path: "/v")

        try Data("endpoint { path = \n".utf8).write(to: directory.appendingPathComponent("v.lua"))
        server.signal(SIGHUP)
        let failed = try await server.waitForStderr(containing: "reload failed")
        XCTAssertTrue(failed.contains("still serving the previous scripts"), failed)
        XCTAssertTrue(server.stderr.contains("scripts/v.lua:2:"), server.stderr)

        try await client.send(text: #"{"type":"which"}"#)
        let reply = try await client.nextJSON()
        XCTAssertEqual(reply["version"] as? Int, 1)

        server.signal(SIGTERM)
        let status = try await server.waitForExit(timeout: 15)
        XCTAssertEqual(status, 0, server.stderr)
    }

    func testServeWithBrokenScriptsRefusesToStartAndExits1() async throws {
        let directory = try self.scripts(["bad.lua": "endpoint {\n  path = \"/x\",\n  on = { x = 1 },\n}\n"])
        let server = try self.launch(["serve", directory.path, "--port", "0"])
        let status = try await server.waitForExit(timeout: 15)
        XCTAssertEqual(status, 1)
        XCTAssertTrue(server.stderr.contains("scripts/bad.lua:3: endpoint: 'on.x' must be a function"), server.stderr)
        XCTAssertFalse(server.stderr.contains("listening on"))
    }

    func testCheckOnABrokenFolderExits1AndPrintsFileLine() async throws {
        let directory = try self.scripts([
            "good.lua": #"endpoint { path = "/good" }"#,
            "broken.lua": "local a = 1\nlocal b = = 2\n",
        ])
        let check = try self.launch(["check", directory.path])
        let status = try await check.waitForExit(timeout: 15)
        XCTAssertEqual(status, 1)
        XCTAssertTrue(check.stderr.contains("scripts/broken.lua:2: unexpected symbol near '='"), check.stderr)
        XCTAssertEqual(check.stdout, "")
    }

    func testCheckOnAGoodFolderListsEndpointsAndExits0() async throws {
        let directory = try self.scripts([
            "a.lua": #"endpoint { path = "/a", initial = { x = 1 } }"#,
            "b.lua": "\n" + #"endpoint { path = "/b/:id", keepalive = { ping_every = 0 } }"#,
        ])
        let check = try self.launch(["check", directory.path])
        let status = try await check.waitForExit(timeout: 15)
        XCTAssertEqual(status, 0, check.stderr)
        let lines = check.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 3, check.stdout)
        XCTAssertTrue(lines.first?.hasPrefix("/a  (scripts/a.lua:1)  initial") ?? false, check.stdout)
        XCTAssertTrue(lines.dropFirst().first?.hasPrefix("/b/:id  (scripts/b.lua:2)") ?? false, check.stdout)
        XCTAssertEqual(lines.last, "\(directory.path): 2 endpoints OK")
    }

    private static func port(in line: String) -> Int? {
        guard let range = line.range(of: "ws://127.0.0.1:") else { return nil }
        return Int(line[range.upperBound...].prefix(while: \.isNumber))
    }
}

/// A child process whose output is collected as it arrives and waited on with deadlines.
final class ChildProcess: Sendable {
    private let process: Process
    private let output = LockedState((stdout: Data(), stderr: Data(), closedPipes: 0))
    private let exitStatus = LockedState<Int32?>(nil)

    init(executable: URL, arguments: [String]) throws {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        process.standardInput = FileHandle.nullDevice
        self.process = process
        let output = self.output
        stdout.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            output.withLock { data.isEmpty ? ($0.closedPipes += 1) : $0.stdout.append(data) }
            if data.isEmpty { handle.readabilityHandler = nil }
        }
        stderr.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            output.withLock { data.isEmpty ? ($0.closedPipes += 1) : $0.stderr.append(data) }
            if data.isEmpty { handle.readabilityHandler = nil }
        }
        let exitStatus = self.exitStatus
        process.terminationHandler = { process in
            exitStatus.withLock { $0 = process.terminationStatus }
        }
        try process.run()
    }

    var stdout: String { String(decoding: self.output.withLock { $0.stdout }, as: UTF8.self) }
    var stderr: String { String(decoding: self.output.withLock { $0.stderr }, as: UTF8.self) }

    func signal(_ signal: Int32) {
        kill(self.process.processIdentifier, signal)
    }

    /// The first complete stderr line containing `text`.
    func waitForStderr(containing text: String, timeout: Double = 15) async throws -> String {
        let found = await eventually(timeout: timeout) {
            self.stderr.split(separator: "\n").contains { $0.contains(text) }
                || self.exitStatus.withLock { $0 != nil }
        }
        if found, let line = self.stderr.split(separator: "\n").first(where: { $0.contains(text) }) {
            return String(line)
        }
        throw TestClientError.timeout("no stderr line containing \"\(text)\"; stderr so far:\n\(self.stderr)")
    }

    func waitForExit(timeout: Double) async throws -> Int32 {
        _ = await eventually(timeout: timeout) { self.exitStatus.withLock { $0 != nil } }
        guard let status = self.exitStatus.withLock({ $0 }) else {
            throw TestClientError.timeout("process still running after \(timeout)s; stderr:\n\(self.stderr)")
        }
        // Everything it wrote is in once both pipes reached end of file.
        _ = await eventually(timeout: 2) { self.output.withLock { $0.closedPipes == 2 } }
        return status
    }

    /// Ends the process if it is still running: SIGTERM, then SIGKILL after two seconds.
    func stop() async {
        guard self.process.isRunning else { return }
        self.signal(SIGTERM)
        if await eventually(timeout: 2, { !self.process.isRunning }) { return }
        self.signal(SIGKILL)
        _ = await eventually(timeout: 2) { !self.process.isRunning }
    }
}
