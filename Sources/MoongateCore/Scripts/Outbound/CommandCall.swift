import Dispatch
import Foundation
import LuaBridge
import NIOConcurrencyHelpers

/// One `exec(program, args, { timeout, stdin })`: the program runs directly (never through a
/// shell) in the scripts folder, its output is read as it comes, and it is killed (SIGKILL) at its
/// timeout, when its output passes the limit, or when the callback is cancelled.
struct CommandCall: Sendable {
    /// The absolute path `--allow-exec` allowed.
    let program: String
    let arguments: [String]
    let stdin: [UInt8]?
    let timeout: Double
    let directory: String

    static let defaultTimeout: Double = 10
    /// Bytes of stdout, and of stderr, read at most.
    static let maxOutput = 8 << 20

    func perform() async -> OperationResult {
        let run = CommandRun()
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                // Blocking reads and waits: on a thread of their own, never on the concurrency pool.
                DispatchQueue.global().async {
                    continuation.resume(returning: self.runBlocking(run))
                }
            }
        } onCancel: {
            run.cancel()
        }
    }

    private func runBlocking(_ run: CommandRun) -> OperationResult {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: self.program)
        process.arguments = self.arguments
        process.currentDirectoryURL = URL(fileURLWithPath: self.directory, isDirectory: true)
        let output = Pipe()
        let errors = Pipe()
        let input = self.stdin == nil ? nil : Pipe()
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = input ?? FileHandle.nullDevice
        let exited = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in exited.signal() }
        do {
            try process.run()
        } catch {
            return .failure("exec \(self.program): \(error.localizedDescription)", outcome: "error")
        }
        run.started(process.processIdentifier)
        // Our copies of the child's ends: EOF comes once the child (and its children) close theirs.
        try? output.fileHandleForWriting.close()
        try? errors.fileHandleForWriting.close()
        if let input, let bytes = self.stdin {
            try? input.fileHandleForReading.close()
            DispatchQueue.global().async {
                // A child that exits without reading gets EPIPE here (SIGPIPE is ignored by the host).
                try? input.fileHandleForWriting.write(contentsOf: bytes)
                try? input.fileHandleForWriting.close()
            }
        }
        var pump = OutputPump(
            stdout: output.fileHandleForReading.fileDescriptor,
            stderr: errors.fileHandleForReading.fileDescriptor,
            limit: Self.maxOutput
        )
        let deadline = DispatchTime.now() + self.timeout
        var ending = pump.run(until: deadline, cancelled: { run.isCancelled })
        // A child that closed its output may still run: it too has until the deadline.
        if ending == .finished, exited.wait(timeout: deadline) == .timedOut {
            ending = .timedOut
        }
        if ending != .finished {
            run.kill()
            exited.wait()
        }
        try? output.fileHandleForReading.close()
        try? errors.fileHandleForReading.close()
        switch ending {
        case .timedOut:
            return .failure("timeout", outcome: "timeout")
        case .cancelled:
            return .failure("cancelled", outcome: "cancelled")
        case .tooLarge(let stream):
            return .failure("exec \(self.program): \(stream) is larger than \(Self.maxOutput) bytes; killed", outcome: "too_large")
        case .finished:
            break
        }
        var fields: [(String, LuaValue)] = [("stdout", .string(pump.stdout)), ("stderr", .string(pump.stderr))]
        if process.terminationReason == .uncaughtSignal {
            fields += [("code", .integer(128 + Int(process.terminationStatus))), ("signal", .integer(Int(process.terminationStatus)))]
        } else {
            fields.append(("code", .integer(Int(process.terminationStatus))))
        }
        return OperationResult(values: [.table(fields)], outcome: "ok")
    }
}

/// The running child, shared with the cancellation handler.
private final class CommandRun: Sendable {
    private struct State {
        var pid: pid_t?
        var cancelled = false
        var killed = false
    }
    private let state = NIOLockedValueBox(State())

    var isCancelled: Bool { self.state.withLockedValue { $0.cancelled } }

    func started(_ pid: pid_t) {
        let cancelledAlready = self.state.withLockedValue { state in
            state.pid = pid
            return state.cancelled
        }
        if cancelledAlready { self.kill() }
    }

    func cancel() {
        self.state.withLockedValue { $0.cancelled = true }
        self.kill()
    }

    func kill() {
        let pid: pid_t? = self.state.withLockedValue { state in
            guard !state.killed, let pid = state.pid else { return nil }
            state.killed = true
            return pid
        }
        if let pid {
            _ = Foundation.kill(pid, SIGKILL)
        }
    }
}

/// Reads a child's stdout and stderr together (poll), so that neither pipe can fill and stall it.
struct OutputPump {
    enum Ending: Equatable {
        case finished, timedOut, cancelled
        case tooLarge(String)
    }

    private var open: [(fd: Int32, name: String)]
    private let limit: Int
    private(set) var stdout: [UInt8] = []
    private(set) var stderr: [UInt8] = []

    init(stdout: Int32, stderr: Int32, limit: Int) {
        self.open = [(stdout, "stdout"), (stderr, "stderr")]
        self.limit = limit
    }

    mutating func run(until deadline: DispatchTime, cancelled: () -> Bool) -> Ending {
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while !self.open.isEmpty {
            if cancelled() { return .cancelled }
            let now = DispatchTime.now()
            guard now < deadline else { return .timedOut }
            // Wake at least every 100 ms to notice a cancellation.
            let waitMilliseconds = Int32(min(100, (deadline.uptimeNanoseconds - now.uptimeNanoseconds) / 1_000_000 + 1))
            var descriptors = self.open.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            let ready = poll(&descriptors, nfds_t(descriptors.count), waitMilliseconds)
            if ready < 0 {
                if errno == EINTR { continue }
                return .finished
            }
            for (position, descriptor) in descriptors.enumerated().reversed() where descriptor.revents != 0 {
                let count = chunk.withUnsafeMutableBytes { read(descriptor.fd, $0.baseAddress, $0.count) }
                if count < 0, errno == EINTR || errno == EAGAIN { continue }
                if count <= 0 {
                    self.open.remove(at: position)
                    continue
                }
                let name = self.open[position].name
                if name == "stdout" {
                    self.stdout += chunk[..<count]
                    if self.stdout.count > self.limit { return .tooLarge(name) }
                } else {
                    self.stderr += chunk[..<count]
                    if self.stderr.count > self.limit { return .tooLarge(name) }
                }
            }
        }
        return .finished
    }
}
