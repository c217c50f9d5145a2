import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// What a test client can fail with.
enum TestClientError: Error, CustomStringConvertible {
    /// The server answered the upgrade request with this HTTP status instead of 101.
    case notUpgraded(status: Int)
    /// Nothing arrived before the deadline.
    case timeout(String)
    /// Something arrived that the test did not expect.
    case unexpected(String)

    var description: String {
        switch self {
        case .notUpgraded(let status): return "not upgraded: HTTP \(status)"
        case .timeout(let what): return "timed out: \(what)"
        case .unexpected(let what): return "unexpected: \(what)"
        }
    }
}

/// A WebSocket client for integration tests, built on NIO's typed client upgrader and an
/// `NIOAsyncChannel`. Every inbound frame becomes an ``Event`` in arrival order; tests await
/// events with deadlines (`next(timeout:)`), never by sleeping.
final class TestWebSocketClient: Sendable {
    enum Event: Sendable, Equatable, CustomStringConvertible {
        case text(String)
        case binary([UInt8])
        case ping
        case pong
        /// A close frame from the server, with its status code if it carried one.
        case close(code: UInt16?)
        /// The TCP connection is gone. Sticky: once seen, every later `next` returns it too.
        case disconnected

        var description: String {
            switch self {
            case .text(let text): return "text(\(text.prefix(200)))"
            case .binary(let bytes): return "binary(\(bytes.count) bytes)"
            case .ping: return "ping"
            case .pong: return "pong"
            case .close(let code): return "close(\(code.map(String.init) ?? "no code"))"
            case .disconnected: return "disconnected"
            }
        }
    }

    private enum UpgradeResult: Sendable {
        case websocket(NIOAsyncChannel<WebSocketFrame, WebSocketFrame>, any Channel)
        case notUpgraded(EventLoopFuture<Int>)
    }

    /// The underlying channel, for abrupt closes.
    let channel: any Channel
    private let outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>
    private let events: EventQueue<Event>
    private let state: LockedState<ClientState>
    private let reader: Task<Void, Never>

    private struct ClientState {
        var closeSent = false
        var closeReason: String?
    }

    private init(
        channel: any Channel,
        outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>,
        events: EventQueue<Event>,
        state: LockedState<ClientState>,
        reader: Task<Void, Never>
    ) {
        self.channel = channel
        self.outbound = outbound
        self.events = events
        self.state = state
        self.reader = reader
    }

    /// The reason text of the last close frame the server sent.
    var lastCloseReason: String? { self.state.withLock { $0.closeReason } }

    // MARK: Connecting

    /// Opens a WebSocket to `ws://127.0.0.1:<port><path>`. Throws ``TestClientError/notUpgraded(status:)``
    /// with the HTTP status when the server answers without upgrading (e.g. 404).
    /// - Parameters:
    ///   - autoPong: answer the server's pings (false plays a dead peer).
    ///   - autoCloseReply: answer the server's close frame (false plays a peer that never completes
    ///     the closing handshake).
    static func connect(
        port: Int,
        path: String,
        headers: [String: String] = [:],
        autoPong: Bool = true,
        autoCloseReply: Bool = true,
        timeout: Double = 5
    ) async throws -> TestWebSocketClient {
        try await withTimeout(timeout, "connecting to \(path)") {
            try await Self.connectUnbounded(
                port: port,
                path: path,
                headers: headers,
                autoPong: autoPong,
                autoCloseReply: autoCloseReply
            )
        }
    }

    private static func connectUnbounded(
        port: Int,
        path: String,
        headers: [String: String],
        autoPong: Bool,
        autoCloseReply: Bool
    ) async throws -> TestWebSocketClient {
        let upgrade: EventLoopFuture<UpgradeResult> = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let upgrader = NIOTypedWebSocketClientUpgrader<UpgradeResult>(
                        maxFrameSize: 1 << 20,
                        upgradePipelineHandler: { channel, _ in
                            channel.eventLoop.makeCompletedFuture {
                                let asyncChannel = try NIOAsyncChannel<WebSocketFrame, WebSocketFrame>(
                                    wrappingChannelSynchronously: channel
                                )
                                return UpgradeResult.websocket(asyncChannel, channel)
                            }
                        }
                    )
                    var requestHeaders = HTTPHeaders()
                    requestHeaders.add(name: "Host", value: "127.0.0.1:\(port)")
                    requestHeaders.add(name: "Content-Length", value: "0")
                    for (name, value) in headers {
                        requestHeaders.add(name: name, value: value)
                    }
                    let requestHead = HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: requestHeaders)
                    let configuration = NIOTypedHTTPClientUpgradeConfiguration(
                        upgradeRequestHead: requestHead,
                        upgraders: [upgrader],
                        notUpgradingCompletionHandler: { channel in
                            channel.eventLoop.makeCompletedFuture {
                                // The response head is passed on after this handler runs: catch its status.
                                let status = channel.eventLoop.makePromise(of: Int.self)
                                try channel.pipeline.syncOperations.addHandler(StatusCapture(status: status))
                                return UpgradeResult.notUpgraded(status.futureResult)
                            }
                        }
                    )
                    var pipeline = NIOUpgradableHTTPClientPipelineConfiguration(upgradeConfiguration: configuration)
                    // A server that speaks first (an initial payload) may have its first frame in the
                    // same read as the 101 response; the default (.dropBytes) would lose it.
                    pipeline.leftOverBytesStrategy = .forwardBytes
                    return try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(configuration: pipeline)
                }
            }

        switch try await upgrade.get() {
        case .notUpgraded(let statusFuture):
            let status = try await statusFuture.get()
            throw TestClientError.notUpgraded(status: status)
        case .websocket(let asyncChannel, let channel):
            let events = EventQueue<Event>(terminal: .disconnected)
            let state = LockedState(ClientState(closeSent: !autoCloseReply))
            let writer = channel.eventLoop.makePromise(of: NIOAsyncChannelOutboundWriter<WebSocketFrame>.self)
            let reader = Task {
                do {
                    try await asyncChannel.executeThenClose { inbound, outbound in
                        writer.succeed(outbound)
                        for try await frame in inbound {
                            await Self.handle(frame, events: events, state: state, outbound: outbound, autoPong: autoPong)
                        }
                    }
                } catch {
                    writer.fail(error)
                }
                events.push(.disconnected)
            }
            let outbound = try await writer.futureResult.get()
            return TestWebSocketClient(channel: channel, outbound: outbound, events: events, state: state, reader: reader)
        }
    }

    private static func handle(
        _ frame: WebSocketFrame,
        events: EventQueue<Event>,
        state: LockedState<ClientState>,
        outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>,
        autoPong: Bool
    ) async {
        var data = frame.unmaskedData
        switch frame.opcode {
        case .text:
            events.push(.text(data.readString(length: data.readableBytes) ?? ""))
        case .binary:
            events.push(.binary(data.readBytes(length: data.readableBytes) ?? []))
        case .ping:
            events.push(.ping)
            if autoPong {
                let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData)
                try? await outbound.write(pong)
            }
        case .pong:
            events.push(.pong)
        case .connectionClose:
            let code = data.readInteger(as: UInt16.self)
            let reason = data.readString(length: data.readableBytes)
            let alreadySent = state.withLock { state in
                state.closeReason = reason
                defer { state.closeSent = true }
                return state.closeSent
            }
            events.push(.close(code: code))
            if !alreadySent {
                // Echo the code, as a conforming client does, to complete the closing handshake.
                var payload = ByteBuffer()
                if let code {
                    payload.writeInteger(code)
                }
                try? await outbound.write(WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: payload))
            }
        default:
            events.push(.text("<unexpected opcode \(frame.opcode)>"))
        }
    }

    // MARK: Sending

    func send(text: String) async throws {
        try await self.sendRaw(frame: WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: ByteBuffer(string: text)))
    }

    func send(json object: [String: Any]) async throws {
        let data = try JSONSerialization.data(withJSONObject: object)
        try await self.send(text: String(decoding: data, as: UTF8.self))
    }

    func send(binary bytes: [UInt8]) async throws {
        try await self.sendRaw(frame: WebSocketFrame(fin: true, opcode: .binary, maskKey: .random(), data: ByteBuffer(bytes: bytes)))
    }

    /// Sends any frame as is: the caller picks opcode, fin and rsv bits, and the mask (nil for an
    /// unmasked frame, which a server must reject).
    func sendRaw(frame: WebSocketFrame) async throws {
        try await self.outbound.write(frame)
    }

    func ping(_ payload: String = "hi") async throws {
        try await self.sendRaw(frame: WebSocketFrame(fin: true, opcode: .ping, maskKey: .random(), data: ByteBuffer(string: payload)))
    }

    /// Starts the closing handshake with `code`; the server's answer arrives as `.close`.
    func close(code: UInt16 = 1000, reason: String = "") async throws {
        self.state.withLock { $0.closeSent = true }
        var payload = ByteBuffer()
        payload.writeInteger(code)
        payload.writeString(reason)
        try await self.sendRaw(frame: WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: payload))
    }

    /// Drops the TCP connection without a close frame, like a client that crashed.
    func disconnect() async {
        try? await self.channel.close()
        await self.reader.value
    }

    /// Closes the socket (if still open) and waits for the reader to finish; for teardown.
    func shutdown() async {
        try? await self.channel.close()
        await self.reader.value
    }

    // MARK: Receiving

    /// The next event, or ``TestClientError/timeout(_:)`` if none arrives within `timeout` seconds.
    func next(timeout: Double = 5, file: StaticString = #filePath, line: UInt = #line) async throws -> Event {
        do {
            return try await self.events.next(timeout: timeout)
        } catch TestClientError.timeout(let what) {
            throw TestClientError.timeout("\(what) (waiting at \(Self.place(file, line)))")
        }
    }

    private static func place(_ file: StaticString, _ line: UInt) -> String {
        "\(String(describing: file).split(separator: "/").last ?? ""):\(line)"
    }

    /// The next text message, skipping pings and pongs; anything else is an error.
    func nextText(timeout: Double = 5, file: StaticString = #filePath, line: UInt = #line) async throws -> String {
        let deadline = Deadline(seconds: timeout)
        while true {
            let event = try await self.next(timeout: deadline.remaining, file: file, line: line)
            switch event {
            case .ping, .pong:
                continue
            case .text(let text):
                return text
            default:
                throw TestClientError.unexpected("expected a text message, got \(event) at \(Self.place(file, line))")
            }
        }
    }

    /// The next text message parsed as a JSON object.
    func nextJSON(timeout: Double = 5, file: StaticString = #filePath, line: UInt = #line) async throws -> [String: Any] {
        let text = try await self.nextText(timeout: timeout, file: file, line: line)
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw TestClientError.unexpected("not a JSON object: \(text) at \(Self.place(file, line))")
        }
        return object
    }

    /// Waits for the server's close frame, skipping pings, pongs and messages; returns its code.
    /// Throws if the connection ends without one.
    func nextClose(timeout: Double = 5, file: StaticString = #filePath, line: UInt = #line) async throws -> UInt16? {
        let deadline = Deadline(seconds: timeout)
        while true {
            switch try await self.next(timeout: deadline.remaining, file: file, line: line) {
            case .close(let code):
                return code
            case .disconnected:
                throw TestClientError.unexpected("disconnected without a close frame at \(Self.place(file, line))")
            default:
                continue
            }
        }
    }

    /// Waits until the TCP connection is gone; returns every event seen on the way.
    @discardableResult
    func waitForDisconnect(timeout: Double = 5, file: StaticString = #filePath, line: UInt = #line) async throws -> [Event] {
        let deadline = Deadline(seconds: timeout)
        var seen: [Event] = []
        while true {
            let event = try await self.next(timeout: deadline.remaining, file: file, line: line)
            if event == .disconnected {
                return seen
            }
            seen.append(event)
        }
    }
}

/// Catches the status of a response that did not upgrade, then closes the connection.
private final class StatusCapture: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    private let status: EventLoopPromise<Int>

    init(status: EventLoopPromise<Int>) {
        self.status = status
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = Self.unwrapInboundIn(data) {
            self.status.succeed(Int(head.status.code))
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.status.fail(TestClientError.unexpected("connection closed before a response"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.status.fail(error)
        context.close(promise: nil)
    }
}
