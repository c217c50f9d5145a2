import LuaBridge
import NIOCore
import Subprocess
import SystemPackage

/// One `exec(program, args, { timeout, stdin })`, run by swift-subprocess: directly (never through
/// a shell), in the scripts folder, with the signal dispositions and mask a fresh process should
/// have (the host's are not inherited) and none of the host's other descriptors. It is killed at
/// its timeout, when its output passes the limit, or when the callback is cancelled.
struct CommandCall: Sendable {
    /// The absolute path `--allow-exec` allowed.
    let program: String
    let arguments: [String]
    let stdin: [UInt8]?
    let timeout: Double
    let directory: String

    static let defaultTimeout: Double = 10
    /// Bytes of stdout, and of stderr, kept at most.
    static let maxOutput = 8 << 20
    /// Variables of the host's environment a command does not get.
    static let withheld: [Environment.Key] = ["MOONGATE_JWT_SECRET", "MOONGATE_SESSION_TOKEN", "MOONGATE_CLUSTER"]

    private struct TimedOut: Error {}

    func perform() async -> OperationResult {
        do {
            let result = try await withThrowingTaskGroup(of: OperationResult.self) { group in
                group.addTask { try await self.run() }
                group.addTask {
                    try await Task.sleep(for: .nanoseconds(TimeAmount.interval(self.timeout).nanoseconds))
                    throw TimedOut()
                }
                // The first to finish wins; cancelling the run tears the process down (SIGKILL).
                defer { group.cancelAll() }
                return try await group.next()!
            }
            return result
        } catch is TimedOut {
            return .failure("timeout", outcome: "timeout")
        } catch is CancellationError {
            return .failure("cancelled", outcome: "cancelled")
        } catch let error as SubprocessError where error.code == .outputLimitExceeded {
            return .failure("exec \(self.program): its output is larger than \(Self.maxOutput) bytes; killed", outcome: "too_large")
        } catch {
            if Task.isCancelled {
                return .failure("cancelled", outcome: "cancelled")
            }
            return .failure("exec \(self.program): \(error)", outcome: "error")
        }
    }

    private func run() async throws -> OperationResult {
        let executable = Executable.path(FilePath(self.program))
        let arguments = Arguments(self.arguments)
        let directory = FilePath(self.directory)
        // The host's secrets stay with the host.
        let environment = Environment.inherit.updating(Dictionary(uniqueKeysWithValues: Self.withheld.map { ($0, nil) }))
        // A session of its own, so a timeout or cancellation kills what it started too.
        var options = PlatformOptions()
        options.createSession = true
        options.teardownSequence = [.send(signal: .kill, toProcessGroup: true, allowedDurationToNextStep: .milliseconds(200))]
        let outcome =
            if let stdin = self.stdin {
                try await Subprocess.run(
                    executable, arguments: arguments, environment: environment, workingDirectory: directory, platformOptions: options,
                    input: UnreadStdin(bytes: stdin), output: .bytes(limit: Self.maxOutput), error: .bytes(limit: Self.maxOutput)
                )
            } else {
                try await Subprocess.run(
                    executable, arguments: arguments, environment: environment, workingDirectory: directory, platformOptions: options,
                    input: .none, output: .bytes(limit: Self.maxOutput), error: .bytes(limit: Self.maxOutput)
                )
            }
        var fields: [(String, LuaValue)] = [("stdout", .string(outcome.standardOutput)), ("stderr", .string(outcome.standardError))]
        switch outcome.terminationStatus {
        case .exited(let code):
            fields.append(("code", .integer(Int(code))))
        case .signaled(let signal):
            fields += [("code", .integer(128 + Int(signal))), ("signal", .integer(Int(signal)))]
        }
        return OperationResult(values: [.table(fields)], outcome: "ok")
    }
}

/// `stdin` for a program that may exit without reading it all. A write that fails (the pipe
/// closed: EPIPE) is no failure of the call, the program's exit status says what happened; and
/// swift-subprocess 1.0.2 leaves the pipe open when `write` throws, then traps ("FileDescriptor
/// ... was not closed"), which took the whole host down.
struct UnreadStdin: InputProtocol {
    let bytes: [UInt8]

    func write(with writer: StandardInputWriter) async throws {
        _ = try? await writer.write(self.bytes)
    }
}
