import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// Answers the plain HTTP requests that reach the server: health, metrics, the console and
/// `moongate.js`, the sessions API, a 426 for an endpoint requested without an upgrade, 404 for
/// anything else. Removed once a connection upgrades.
final class HTTPRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    static let name = "moongate.http"

    /// The public listener serves everything (metrics and the console too, unless an admin
    /// listener takes them); the admin listener only health, readiness, metrics and the console.
    enum Role {
        case service(exposesOperations: Bool)
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
    private let consoleAccess: ConsoleAccess
    /// Why the handshake gate refused this connection's upgrade, if it did.
    private let refusal: () -> HTTPReply?
    private var request: HTTPRequestHead?
    private var body = ByteBuffer()
    private var bodyTooLarge = false

    init(
        services: HostServices,
        configuration: ServerConfiguration,
        readiness: NIOLockedValueBox<Bool>,
        role: Role,
        consoleAccess: ConsoleAccess,
        refusal: @escaping () -> HTTPReply? = { nil }
    ) {
        self.metrics = services.metrics
        self.role = role
        self.consoleAccess = consoleAccess
        self.readiness = readiness
        self.refusal = refusal
        self.endpoints = services.endpoints
        self.connections = services.connections
        self.maxConnections = configuration.maxConnections
        self.sessionsAPI = SessionsAPI(store: services.sessions, token: configuration.sessionToken)
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
            let reply = self.route(head, on: context.eventLoop)
            if let later = reply.later {
                let loopBoundContext = context.loopBound
                let loopBoundSelf = NIOLoopBound(self, eventLoop: context.eventLoop)
                later.hop(to: context.eventLoop).whenComplete { result in
                    let reply = (try? result.get()) ?? .error(.internalServerError, "the request failed")
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

    private func route(_ head: HTTPRequestHead, on loop: any EventLoop) -> HTTPReply {
        let target = RequestTarget(uri: head.uri)
        if target.path == "/healthz" {
            return head.method == .GET || head.method == .HEAD ? .text(.ok, "ok\n") : .methodNotAllowed("GET")
        }
        let exposesMetrics: Bool
        switch self.role {
        case .admin: exposesMetrics = true
        case .service(let exposes): exposesMetrics = exposes
        }
        if let reply = self.routeConsole(head, target: target) {
            return reply
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
            return .text(.notFound, "the admin listener serves /healthz, /readyz, /metrics and /console\n")
        }
        if let reply = self.sessionsAPI.handle(head, target: target, body: self.bodyTooLarge ? nil : self.body, on: loop) {
            return reply
        }
        if let route = self.endpoints.route(target.path) {
            if let refusal = self.refusal() {
                return refusal
            }
            if let spec = route.slot.binding?.spec, let param = spec.session?.param,
                ChildPipeline.sessionID(spec: spec, params: route.params, target: target) == nil
            {
                return .text(.badRequest, "this endpoint streams a session: name it with the path or query parameter '\(param)'\n")
            }
            return self.refusedUpgrade(head)
        }
        return .text(.notFound, "no endpoint at \(target.path)\n")
    }

    /// `/moongate.js` everywhere; `/console` (and `/`, unless an endpoint claims it) where the
    /// console is served. nil: not a console request.
    private func routeConsole(_ head: HTTPRequestHead, target: RequestTarget) -> HTTPReply? {
        // A WebSocket handshake to `/` or `/console` is not a page view: it gets the 404 of a path
        // no endpoint declares.
        let asksForWebSocket = head.headers[canonicalForm: "Upgrade"].contains { $0.lowercased() == "websocket" }
        let isConsole =
            !asksForWebSocket
            && (target.path == "/console" || target.path == "/console/"
                || (target.path == "/" && self.consoleAccess == .allowed && self.endpoints.route("/") == nil))
        guard target.path == "/moongate.js" || isConsole || target.path == ConsoleFeedHandler.path else { return nil }
        guard head.method == .GET || head.method == .HEAD else { return .methodNotAllowed("GET") }
        if target.path == "/moongate.js" {
            var reply = HTTPReply(status: .ok, contentType: "text/javascript; charset=utf-8", body: BrowserClient.javascript)
            reply.headers.add(name: "Cache-Control", value: "no-cache")
            reply.headers.add(name: "Access-Control-Allow-Origin", value: "*")
            return reply
        }
        switch self.consoleAccess {
        case .absent:
            return .text(.notFound, "no console here\n")
        case .localOnly:
            return .text(.forbidden, "the console is shown to local clients only: serve it on --admin-port (with --admin-host) to reach it remotely\n")
        case .allowed:
            break
        }
        if target.path == ConsoleFeedHandler.path {
            // Reaching here, an upgrade was refused: a page from another origin, or a bad handshake.
            guard asksForWebSocket else {
                var reply = HTTPReply.text(.upgradeRequired, "the console's live feed is a WebSocket\n")
                reply.headers.add(name: "Upgrade", value: "websocket")
                return reply
            }
            return ConsoleAccess.isFromConsolePage(head.headers) ? .text(.badRequest, "malformed WebSocket handshake\n") : .text(.forbidden, "origin not allowed\n")
        }
        var reply = HTTPReply(status: .ok, contentType: "text/html; charset=utf-8", body: ConsolePage.html)
        reply.headers.add(name: "Cache-Control", value: "no-store")
        reply.headers.add(name: "X-Frame-Options", value: "DENY")
        reply.headers.add(
            name: "Content-Security-Policy",
            value: "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self' ws: wss:; frame-ancestors 'none'"
        )
        return reply
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
    /// A reply that waits on storage (the journal, the cluster's log): what is sent is what this
    /// brings, and the other fields are unused.
    var later: EventLoopFuture<HTTPReply>?

    static func later(_ reply: EventLoopFuture<HTTPReply>) -> HTTPReply {
        var placeholder = HTTPReply.text(.internalServerError, "")
        placeholder.later = reply
        return placeholder
    }

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
