import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// Answers the plain HTTP requests that reach the server: `/healthz`, the sessions API, a 426 for
/// an endpoint requested without an upgrade, 404 for anything else. Removed once a connection
/// upgrades.
final class HTTPRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    static let name = "moongate.http"

    /// The public listener serves everything (metrics too, unless an admin listener takes them);
    /// the admin listener only health, readiness and metrics.
    enum Role {
        case service(exposesMetrics: Bool)
        case admin
    }
    /// Largest request body accepted (a batch of session events).
    static let maxBodySize = 1 << 20

    private let endpoints: EndpointTable
    private let connections: ConnectionRegistry
    private let maxConnections: Int
    private let sessionsAPI: SessionsAPI
    private let readiness: NIOLockedValueBox<Bool>
    private let metrics: HostMetrics
    private let role: Role
    /// Why the handshake gate refused this connection's upgrade, if it did.
    private let refusal: () -> HTTPReply?
    private var request: HTTPRequestHead?
    private var body = ByteBuffer()
    private var bodyTooLarge = false

    init(
        endpoints: EndpointTable,
        sessions: SessionStore,
        connections: ConnectionRegistry,
        configuration: ServerConfiguration,
        readiness: NIOLockedValueBox<Bool>,
        metrics: HostMetrics,
        role: Role,
        refusal: @escaping () -> HTTPReply? = { nil }
    ) {
        self.metrics = metrics
        self.role = role
        self.readiness = readiness
        self.refusal = refusal
        self.endpoints = endpoints
        self.connections = connections
        self.maxConnections = configuration.maxConnections
        self.sessionsAPI = SessionsAPI(store: sessions, token: configuration.sessionToken)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.request = head
            self.body.clear()
            self.bodyTooLarge = false
        case .body(var chunk):
            if self.body.readableBytes + chunk.readableBytes > Self.maxBodySize {
                self.bodyTooLarge = true
            } else {
                self.body.writeBuffer(&chunk)
            }
        case .end:
            guard let head = self.request else { return }
            self.request = nil
            let reply = self.route(head)
            if let after = reply.after {
                let loopBoundContext = context.loopBound
                let loopBoundSelf = NIOLoopBound(self, eventLoop: context.eventLoop)
                after.hop(to: context.eventLoop).whenComplete { result in
                    let reply = (try? result.get()).map { reply }
                        ?? .error(.internalServerError, "the events were appended but could not be journaled")
                    loopBoundSelf.value.respond(reply, to: head, context: loopBoundContext.value)
                }
            } else {
                self.respond(reply, to: head, context: context)
            }
        }
    }

    /// NIO's HTTPServerProtocolErrorHandler has already answered a malformed request with 400 and
    /// leaves closing the connection to the pipeline.
    /// (A failed upgrade also reports an error here, but that request is still answered by
    /// `route`, so only parse errors close.)
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is HTTPParserError {
            context.close(promise: nil)
        }
    }

    private func route(_ head: HTTPRequestHead) -> HTTPReply {
        let target = RequestTarget(uri: head.uri)
        if target.path == "/healthz" {
            return head.method == .GET || head.method == .HEAD ? .text(.ok, "ok\n") : .methodNotAllowed("GET")
        }
        let exposesMetrics: Bool
        switch self.role {
        case .admin: exposesMetrics = true
        case .service(let exposes): exposesMetrics = exposes
        }
        if target.path == "/metrics", exposesMetrics {
            guard head.method == .GET || head.method == .HEAD else { return .methodNotAllowed("GET") }
            return HTTPReply(status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: self.metrics.render())
        }
        if target.path == "/readyz" {
            guard head.method == .GET || head.method == .HEAD else { return .methodNotAllowed("GET") }
            return self.readiness.withLockedValue { $0 } ? .text(.ok, "ready\n") : .text(.serviceUnavailable, "not ready\n")
        }
        if case .admin = self.role {
            return .text(.notFound, "the admin listener serves /healthz, /readyz and /metrics\n")
        }
        if let reply = self.sessionsAPI.handle(head, target: target, body: self.bodyTooLarge ? nil : self.body) {
            return reply
        }
        if let route = self.endpoints.route(target.path) {
            if let refusal = self.refusal() {
                return refusal
            }
            if let param = route.slot.binding?.spec.session?.param,
                ChildPipeline.sessionID(route: route, target: target) == nil
            {
                return .text(.badRequest, "this endpoint streams a session: name it with the path or query parameter '\(param)'\n")
            }
            return self.refusedUpgrade(head)
        }
        return .text(.notFound, "no endpoint at \(target.path)\n")
    }

    /// Why a request for a WebSocket endpoint was not upgraded.
    private func refusedUpgrade(_ head: HTTPRequestHead) -> HTTPReply {
        let asksForWebSocket = head.headers[canonicalForm: "Upgrade"].contains { $0.lowercased() == "websocket" }
        guard asksForWebSocket else {
            var reply = HTTPReply.text(.upgradeRequired, "this is a WebSocket endpoint: connect with a WebSocket client\n")
            reply.headers.add(name: "Upgrade", value: "websocket")
            return reply
        }
        if self.connections.count >= self.maxConnections {
            var reply = HTTPReply.text(.serviceUnavailable, "connection limit reached: try again later\n")
            reply.headers.add(name: "Retry-After", value: "5")
            return reply
        }
        if head.method != .GET {
            return .methodNotAllowed("GET")
        }
        if head.headers.first(name: "Sec-WebSocket-Version") != "13" {
            var reply = HTTPReply.text(.upgradeRequired, "unsupported WebSocket version: this server speaks version 13\n")
            reply.headers.add(name: "Sec-WebSocket-Version", value: "13")
            return reply
        }
        return .text(.badRequest, "malformed WebSocket handshake: it needs Connection: Upgrade and a valid Sec-WebSocket-Key\n")
    }

    private func respond(_ reply: HTTPReply, to head: HTTPRequestHead, context: ChannelHandlerContext) {
        var headers = reply.headers
        headers.add(name: "Content-Type", value: reply.contentType)
        headers.add(name: "Content-Length", value: "\(reply.body.utf8.count)")
        headers.add(name: "Connection", value: "close")
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: reply.status, headers: headers))), promise: nil)
        if head.method != .HEAD {
            context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: reply.body)))), promise: nil)
        }
        let loopBoundContext = context.loopBound
        context.writeAndFlush(self.wrapOutboundOut(.end(nil))).whenComplete { _ in
            loopBoundContext.value.close(promise: nil)
        }
    }
}

@available(*, unavailable)
extension HTTPRequestHandler: Sendable {}

/// A complete HTTP response.
struct HTTPReply: Sendable {
    var status: HTTPResponseStatus
    var contentType: String
    var body: String
    var headers = HTTPHeaders()
    /// Sent only once this completes (a journal write, say).
    var after: EventLoopFuture<Void>?

    static func text(_ status: HTTPResponseStatus, _ body: String) -> HTTPReply {
        HTTPReply(status: status, contentType: "text/plain; charset=utf-8", body: body)
    }

    static func json(_ status: HTTPResponseStatus, _ body: String) -> HTTPReply {
        HTTPReply(status: status, contentType: "application/json", body: body + "\n")
    }

    static func error(_ status: HTTPResponseStatus, _ message: String) -> HTTPReply {
        .json(status, #"{"error":\#(jsonString(message))}"#)
    }

    static func methodNotAllowed(_ allowed: String) -> HTTPReply {
        var reply = HTTPReply.error(.methodNotAllowed, "use \(allowed)")
        reply.headers.add(name: "Allow", value: allowed)
        return reply
    }
}
