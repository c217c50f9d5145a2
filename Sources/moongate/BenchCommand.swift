import ArgumentParser
import Foundation
import MoongateBench
import WebSocketClient

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure a Moongate deployment: idle connections, broadcast fan-out, request/ack, or resumes.",
        discussion: """
            idle and ack and broadcast speak the harness protocol of the bundled /bench endpoint; resume
            reconnects to a session endpoint URL (give ?last_seq=N) and waits for --expect messages each time.
            Prints a summary and one JSON line. Loopback targets only unless --allow-remote.
            """
    )

    @Argument(help: "Mode: idle, broadcast, ack or resume.")
    var mode: String

    @Argument(help: "Target, e.g. ws://127.0.0.1:8080/bench")
    var url: String

    @Option(name: .shortAndLong, help: "Connections (broadcast: listeners; resume: parallel reconnect loops).")
    var connections: Int = 100

    @Option(name: .shortAndLong, help: "Seconds to measure.")
    var duration: Double = 10

    @Option(name: .long, help: "Seconds of warm-up before measuring (ack, broadcast).")
    var warmup: Double = 1

    @Option(name: .shortAndLong, help: "ack: requests outstanding per connection.")
    var window: Int = 1

    @Option(name: .long, help: "broadcast: message size in bytes.")
    var size: Int = 200

    @Option(name: .long, help: "resume: messages each reconnect waits for (ready plus the replay).")
    var expect: Int = 11

    @Option(name: .long, help: "Client event loop threads.")
    var threads: Int = 1

    @Flag(name: .long, help: "Allow a target that is not on this machine.")
    var allowRemote = false

    @Flag(name: .long, help: "Offer permessage-deflate on every connection (and use it if the server agrees).")
    var compression = false

    @Flag(name: .long, help: "broadcast: send a JSON snapshot of job records of --size bytes instead of padding.")
    var snapshot = false

    @Option(name: .long, help: "With --compression, ask the server for this smaller window (9-14): it then compresses for each client alone.")
    var serverWindowBits: Int?

    func validate() throws {
        if let bits = self.serverWindowBits, !(9...14).contains(bits) || !self.compression {
            throw ValidationError("--server-window-bits takes 9 to 14, with --compression")
        }
    }

    func run() async throws {
        guard let mode = BenchOptions.Mode(rawValue: self.mode) else {
            throw ValidationError("mode must be one of: \(BenchOptions.Mode.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var target = try WebSocketTarget(url: self.url, allowRemote: self.allowRemote)
        target.compression = self.compression
        target.serverWindowBits = self.serverWindowBits
        FileDescriptorLimit.raiseToMaximum()
        let options = BenchOptions(
            mode: mode, connections: self.connections, duration: self.duration, warmup: self.warmup,
            window: self.window, size: self.size, expect: self.expect, threads: self.threads
        )
        var configured = options
        configured.snapshot = self.snapshot
        let report = try await BenchRunner.run(url: self.url, target: target, options: configured)
        print(report.summary)
        print(report.json)
    }
}
