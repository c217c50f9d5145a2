public import WebSocketClient
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOWebSocket

/// `moongate client`: a wscat-like client. Prints what arrives (pretty JSON on a terminal, or one
/// JSON message per line), sends each stdin line as a text message, reports close codes, and with
/// `resume` reconnects after a drop with the `last_seq` and `epoch` it has seen.
public struct InteractiveClient: Sendable {
    public struct Options: Sendable {
        public var resume: Bool
        /// One message per line, as received (no pretty printing, no decoration).
        public var jsonLines: Bool
        public var pretty: Bool

        public init(resume: Bool, jsonLines: Bool, pretty: Bool) {
            self.resume = resume
            self.jsonLines = jsonLines
            self.pretty = pretty
        }
    }

    let target: WebSocketTarget
    let options: Options

    public init(target: WebSocketTarget, options: Options) {
        self.target = target
        self.options = options
    }

    /// Runs until stdin ends (then closes with 1000) or, without `resume`, the server closes.
    public func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let state = ClientState()
        // Lines typed while no connection is up wait for the next one.
        let current = NIOLockedValueBox<(channel: (any Channel)?, waiting: [String])>((nil, []))
        let inputEnded = group.next().makePromise(of: Void.self)
        // Set (under its lock) before the loop shuts down: stdin may end after that, and a promise
        // completed on a loop that has shut down is an error NIO prints.
        let stopping = NIOLockedValueBox(false)
        // One reader of stdin for the whole run; lines go to whichever connection is current.
        let input = Task {
            for await line in Self.standardInputLines() {
                let channel = current.withLockedValue { current -> (any Channel)? in
                    if current.channel == nil { current.waiting.append(line) }
                    return current.channel
                }
                try? await channel?.writeAndFlush(Self.frame(line))
            }
            stopping.withLockedValue { stopped in
                if !stopped { inputEnded.succeed() }
            }
        }
        defer { input.cancel() }
        let shutDown = {
            stopping.withLockedValue { $0 = true }
            try? await group.shutdownGracefully()
        }
        var attempt = 0
        while true {
            let target = state.resumeTarget(self.target, enabled: self.options.resume)
            let closed = group.next().makePromise(of: UInt16?.self)
            let printer = MessagePrinter(options: self.options, state: state)
            let channel: any Channel
            do {
                channel = try await ClientConnection.open(target, group: group, printer: printer, closed: closed).get()
                attempt = 0
                let waiting = current.withLockedValue { current -> [String] in
                    current.channel = channel
                    defer { current.waiting = [] }
                    return current.waiting
                }
                for line in waiting {
                    channel.write(Self.frame(line), promise: nil)
                }
                channel.flush()
                let compressed = try await WebSocketDial.isCompressed(channel).get()
                printer.note("connected to ws://\(target.host):\(target.port)\(target.uri)\(compressed ? " (permessage-deflate)" : "")")
            } catch {
                // Said once: without --resume the command reports it as it exits.
                guard self.options.resume else { throw ConnectFailure(description: Self.describe(error, target: target)) }
                printer.note(Self.describe(error, target: target))
                attempt += 1
                try await Task.sleep(for: .milliseconds(min(5000, 200 * (1 << min(attempt, 5)))))
                continue
            }
            switch await Self.first(closed: closed.futureResult, inputEnded: inputEnded.futureResult) {
            case .inputEnded:
                // Replies to the last lines may still be on their way: wait for a quiet moment.
                let deadline = ContinuousClock.now + .seconds(3)
                while ContinuousClock.now < deadline, state.millisecondsSinceLastMessage < 300 {
                    try? await Task.sleep(for: .milliseconds(50))
                }
                WebSocketDial.close(channel)
                _ = try? await closed.futureResult.get()
                await shutDown()
                return
            case .closed(let code):
                current.withLockedValue { $0.channel = nil }
                printer.note("closed: \(code.map(String.init) ?? "no close frame (1006)")")
                guard self.options.resume else {
                    // The socket's own closing still has work on the loop: let it finish first.
                    try? await channel.closeFuture.get()
                    await shutDown()
                    return
                }
                printer.note("reconnecting…")
            }
        }
    }

    /// A connection that failed, in one line: what the host said, or why nothing answered.
    struct ConnectFailure: Error, CustomStringConvertible {
        let description: String
    }

    static func describe(_ error: any Error, target: WebSocketTarget) -> String {
        let place = "\(target.host):\(target.port)"
        switch error {
        case let refused as WebSocketClientError:
            return "\(refused)"
        case let failed as NIOConnectionError:
            let reason = failed.connectionErrors.first.map { Self.reason($0.error) } ?? failed.dnsAAAAError.map(Self.reason) ?? "no address"
            return "cannot connect to \(place): \(reason)"
        case ChannelError.connectTimeout:
            return "cannot connect to \(place): timed out"
        default:
            return "cannot connect to \(place): \(Self.reason(error))"
        }
    }

    private static func reason(_ error: any Error) -> String {
        if let io = error as? IOError {
            return String(cString: strerror(io.errnoCode)).lowercased()
        }
        return "\(error)"
    }

    private static func frame(_ line: String) -> WebSocketFrame {
        WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: ByteBuffer(string: line))
    }

    private enum Outcome: Sendable {
        case inputEnded
        case closed(UInt16?)
    }

    private static func first(closed: EventLoopFuture<UInt16?>, inputEnded: EventLoopFuture<Void>) async -> Outcome {
        await withCheckedContinuation { continuation in
            let resumed = NIOLockedValueBox(false)
            let finish: @Sendable (Outcome) -> Void = { outcome in
                let first = resumed.withLockedValue { resumed in
                    defer { resumed = true }
                    return !resumed
                }
                if first { continuation.resume(returning: outcome) }
            }
            closed.whenSuccess { finish(.closed($0)) }
            inputEnded.whenSuccess { finish(.inputEnded) }
        }
    }

    private static func standardInputLines() -> AsyncStream<String> {
        AsyncStream { continuation in
            let thread = Thread {
                while let line = readLine() {
                    continuation.yield(line)
                }
                continuation.finish()
            }
            thread.start()
        }
    }
}

/// What the client remembers across reconnects.
final class ClientState: Sendable {
    private let position = NIOLockedValueBox<(seq: Int?, epoch: String?)>((nil, nil))
    private let lastMessage = NIOLockedValueBox(ContinuousClock.now)

    var millisecondsSinceLastMessage: Int {
        let elapsed = ContinuousClock.now - self.lastMessage.withLockedValue { $0 }
        return Int(elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000)
    }

    func observe(_ text: String) {
        self.lastMessage.withLockedValue { $0 = ContinuousClock.now }
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else { return }
        self.position.withLockedValue { position in
            if let epoch = object["epoch"] as? String {
                position.epoch = epoch
            }
            if let seq = object["seq"] as? Int, object["type"] as? String != "ready", object["type"] as? String != "reset" {
                position.seq = seq
            }
        }
    }

    /// The URL to (re)connect to: with `last_seq` and `epoch` once events have been seen.
    func resumeTarget(_ target: WebSocketTarget, enabled: Bool) -> WebSocketTarget {
        let position = self.position.withLockedValue { $0 }
        guard enabled, let seq = position.seq else { return target }
        var components = URLComponents(string: "ws://\(target.host):\(target.port)\(target.uri)")!
        var items = (components.queryItems ?? []).filter { $0.name != "last_seq" && $0.name != "epoch" }
        items.append(URLQueryItem(name: "last_seq", value: String(seq)))
        if let epoch = position.epoch {
            items.append(URLQueryItem(name: "epoch", value: epoch))
        }
        components.queryItems = items
        guard var resumed = try? WebSocketTarget(url: components.string!, allowRemote: true) else { return target }
        resumed.compression = target.compression
        return resumed
    }
}

/// Writes what arrives to stdout and notes to stderr.
struct MessagePrinter: Sendable {
    let options: InteractiveClient.Options
    let state: ClientState

    func text(_ text: String) {
        self.state.observe(text)
        if self.options.jsonLines || !self.options.pretty {
            Self.write(text + "\n")
            return
        }
        if let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)),
            let pretty = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
        {
            let marker = (object as? [String: Any])?["type"] as? String == "ack" ? "✓ " : "< "
            Self.write(marker + String(decoding: pretty, as: UTF8.self) + "\n")
        } else {
            Self.write("< " + text + "\n")
        }
    }

    func binary(_ count: Int) {
        self.note("binary message, \(count) bytes")
    }

    func note(_ text: String) {
        FileHandle.standardError.write(Data("moongate client: \(text)\n".utf8))
    }

    /// Whoever read our output has gone (`moongate client ... | head`): stop, as `cat` would.
    private static func write(_ text: String) {
        do {
            try FileHandle.standardOutput.write(contentsOf: Data(text.utf8))
        } catch {
            exit(0)
        }
    }
}
