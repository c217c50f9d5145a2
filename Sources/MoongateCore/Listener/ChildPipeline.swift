import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOSSL
import NIOWebSocket
import WebSocketDeflate

/// Builds each accepted connection's pipeline: HTTP/1 with the WebSocket upgrader, the handshake
/// gate (limits, origin, the endpoint's `authorize` hook), and after the upgrade the WebSocket
/// handlers. Refusals are answered over HTTP by `HTTPRequestHandler`.
struct ChildPipeline: Sendable {
    let services: HostServices
    let configuration: ServerConfiguration
    let readiness: NIOLockedValueBox<Bool>
    let tlsContext: NIOLockedValueBox<NIOSSLContext?>
    let logger: Logger

    /// What the gate decided for this channel's handshake, for the upgrade or the HTTP answer.
    private struct Handshake {
        var refusal: HTTPReply?
        var auth: String?
        var timeout: Scheduled<Void>?
        /// The endpoint as the gate read it, once: the upgrade serves that same definition even
        /// if a reload swaps the binding in between.
        var admitted: (route: (slot: EndpointSlot, params: [String: String]), binding: EndpointBinding)?
        /// The session the client follows, found (or in a cluster, loaded) before the 101.
        var session: Session?
        /// permessage-deflate as agreed in the 101, if it was.
        var deflate: DeflateParameters?
    }

    private var endpoints: EndpointTable { self.services.endpoints }
    private var connections: ConnectionRegistry { self.services.connections }
    private var sessions: SessionStore { self.services.sessions }

    func configure(_ channel: any Channel) throws {
        if let tls = self.tlsContext.withLockedValue({ $0 }) {
            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
        }
        let handshake = NIOLoopBoundBox(Handshake(), eventLoop: channel.eventLoop)
        // A client that opens a connection and never finishes its request is dropped.
        handshake.value.timeout = channel.eventLoop.scheduleTask(in: .interval(self.configuration.handshakeTimeout)) {
            channel.close(promise: nil)
        }
        let upgrader = WebSocketUpgrader(
            shouldUpgrade: { channel, head in
                if RequestTarget(uri: head.uri).path == ConsoleFeedHandler.path {
                    return channel.eventLoop.makeSucceededFuture(self.admitConsoleViewer(head, channel: channel, role: role))
                }
                return self.admit(head, channel: channel, handshake: handshake).map { headers in
                    self.negotiateCompression(head, headers: headers, handshake: handshake)
                }
            },
            upgradePipeline: { channel, head in
                handshake.value.timeout?.cancel()
                if RequestTarget(uri: head.uri).path == ConsoleFeedHandler.path {
                    return self.startConsoleFeed(channel)
                }
                guard let admitted = handshake.value.admitted else { return channel.close() }
                return self.upgrade(
                    channel,
                    head: head,
                    route: admitted.route,
                    binding: admitted.binding,
                    session: handshake.value.session,
                    auth: handshake.value.auth,
                    deflate: handshake.value.deflate
                )
            }
        )
        try self.addHTTP(to: channel, upgrader: upgrader, handler: self.httpHandler(role: role, channel: channel) { handshake.value.refusal })
    }

    /// The admin listener's pipeline: health, readiness, metrics and the console (its page over
    /// HTTP, its live feed over a WebSocket); no endpoint is served here.
    func configureAdmin(_ channel: any Channel) throws {
        let upgrader = WebSocketUpgrader(
            shouldUpgrade: { channel, head in
                guard RequestTarget(uri: head.uri).path == ConsoleFeedHandler.path else {
                    return channel.eventLoop.makeSucceededFuture(nil)
                }
                return channel.eventLoop.makeSucceededFuture(self.admitConsoleViewer(head, channel: channel, role: .admin))
            },
            upgradePipeline: { channel, _ in
                self.startConsoleFeed(channel)
            }
        )
        try self.addHTTP(to: channel, upgrader: upgrader, handler: self.httpHandler(role: .admin, channel: channel))
    }

    /// HTTP/1 with `upgrader`, and `handler` for requests that are not upgraded (removed once one is).
    private func addHTTP(to channel: any Channel, upgrader: WebSocketUpgrader, handler: HTTPRequestHandler) throws {
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(
            withServerUpgrade: (
                upgraders: [upgrader],
                completionHandler: { context in
                    context.pipeline.syncOperations.removeHandler(name: HTTPRequestHandler.name, promise: nil)
                }
            ),
            withErrorHandling: true
        )
        try channel.pipeline.syncOperations.addHandler(handler, name: HTTPRequestHandler.name)
    }

    /// A console viewer only answers pings and closes: NIO's decoder and encoder, small frames.
    private func startConsoleFeed(_ channel: any Channel) -> EventLoopFuture<Void> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandlers([
                WebSocketFrameEncoder(),
                ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 1 << 12)),
                WebSocketProtocolErrorHandler(),
                ConsoleFeedHandler(services: self.services),
            ])
        }
    }

    private var originPolicy: OriginPolicy {
        OriginPolicy(
            allowed: self.configuration.allowedOrigins,
            loopbackHost: OriginPolicy.isLoopbackBindHost(self.configuration.host)
        )
    }

    /// The role of the public listener: it serves metrics and the console only without an admin listener.
    private var role: HTTPRequestHandler.Role {
        .service(exposesOperations: self.configuration.adminPort == nil)
    }

    private func httpHandler(
        role: HTTPRequestHandler.Role,
        channel: any Channel,
        refusal: @escaping () -> HTTPReply? = { nil }
    ) -> HTTPRequestHandler {
        HTTPRequestHandler(
            services: self.services,
            configuration: self.configuration,
            readiness: self.readiness,
            role: role,
            consoleAccess: ConsoleAccess(configuration: self.configuration, role: role, peer: channel.remoteAddress),
            refusal: refusal
        )
    }

    /// Headers for the 101 when a console viewer may watch: a GET with a valid key, from where the
    /// console is served, and from a page of the same origin.
    private func admitConsoleViewer(_ head: HTTPRequestHead, channel: any Channel, role: HTTPRequestHandler.Role) -> HTTPHeaders? {
        guard head.method == .GET, Self.hasValidKey(head.headers),
            ConsoleAccess(configuration: self.configuration, role: role, peer: channel.remoteAddress) == .allowed,
            ConsoleAccess.isFromConsolePage(head.headers)
        else { return nil }
        return HTTPHeaders()
    }

    /// Headers for the 101 if the handshake may proceed; nil leaves the request to the HTTP
    /// handler, which explains the refusal (stored in `handshake`) or the malformed request.
    private func admit(
        _ head: HTTPRequestHead,
        channel: any Channel,
        handshake: NIOLoopBoundBox<Handshake>
    ) -> EventLoopFuture<HTTPHeaders?> {
        let loop = channel.eventLoop
        let target = RequestTarget(uri: head.uri)
        guard head.method == .GET, Self.hasValidKey(head.headers), let route = self.endpoints.route(target.path),
            let binding = route.slot.binding,
            binding.spec.session == nil || Self.sessionID(spec: binding.spec, params: route.params, target: target) != nil,
            self.connections.count < self.configuration.maxConnections
        else {
            return loop.makeSucceededFuture(nil)
        }
        let remote = channel.remoteAddress?.ipAddress
        if let remote, self.connections.count(from: remote) >= self.configuration.maxConnectionsPerAddress {
            handshake.value.refusal = .text(.tooManyRequests, "too many connections from \(remote)\n")
            return loop.makeSucceededFuture(nil)
        }
        let origin = head.headers.first(name: "Origin")
        guard self.originPolicy.allows(origin: origin, host: head.headers.first(name: "Host"), endpointOrigins: binding.spec.origins)
        else {
            self.services.originRefusals.refused(
                origin: origin ?? "",
                endpoint: route.slot.pattern.description,
                script: binding.spec.where,
                endpointOrigins: binding.spec.origins,
                logger: self.logger
            )
            handshake.value.refusal = .text(.forbidden, "origin not allowed: \(origin ?? "") (see --allowed-origin)\n")
            return loop.makeSucceededFuture(nil)
        }
        handshake.value.admitted = (route, binding)
        let authorized = self.authorize(head, target: target, route: route, binding: binding, remote: remote, handshake: handshake, on: loop)
        guard let settings = binding.spec.session, let id = Self.sessionID(spec: binding.spec, params: route.params, target: target)
        else {
            // In a cluster, a client resuming an endpoint's history may come from a host ahead of
            // this one: the copy catches up first, so what it missed is not taken for gone.
            guard let cluster = self.sessions.cluster, let history = route.slot.history, target.query["last_seq"] != nil else {
                return authorized
            }
            return authorized.flatMap { headers in
                self.sessions.catchUp(history, cluster: cluster, on: loop).hop(to: loop).map { _ in headers }
            }
        }
        // Only an admitted client gets its session found or created.
        return authorized.flatMap { headers in
            guard let headers else { return loop.makeSucceededFuture(nil) }
            return self.sessions.follow(id, settings: settings, on: loop).hop(to: loop).map { session in
                handshake.value.session = session
                return headers
            }.flatMapError { error in
                self.logger.warning("refused a client of session \(id): \(error)")
                let status: HTTPResponseStatus = if case SessionError.full = error { .insufficientStorage } else { .serviceUnavailable }
                handshake.value.refusal = .error(status, "\(error)")
                return loop.makeSucceededFuture(nil)
            }
        }
    }

    /// The 101's headers with `Sec-WebSocket-Extensions` added when the client offered
    /// permessage-deflate in a form the host accepts, and neither the host nor the endpoint turned
    /// compression off.
    private func negotiateCompression(_ head: HTTPRequestHead, headers: HTTPHeaders?, handshake: NIOLoopBoundBox<Handshake>) -> HTTPHeaders? {
        guard var headers, self.configuration.compression, handshake.value.admitted?.binding.spec.compression == true,
            let agreed = DeflateParameters.negotiate(offers: head.headers[canonicalForm: "Sec-WebSocket-Extensions"].map(String.init))
        else { return headers }
        headers.add(name: "Sec-WebSocket-Extensions", value: agreed.responseHeader)
        handshake.value.deflate = agreed
        return headers
    }

    /// Runs the endpoint's `authorize`, if it has one; the headers of the 101, or nil (refused).
    private func authorize(
        _ head: HTTPRequestHead,
        target: RequestTarget,
        route: (slot: EndpointSlot, params: [String: String]),
        binding: EndpointBinding,
        remote: String?,
        handshake: NIOLoopBoundBox<Handshake>,
        on loop: any EventLoop
    ) -> EventLoopFuture<HTTPHeaders?> {
        guard binding.spec.authorize else {
            return loop.makeSucceededFuture(HTTPHeaders())
        }
        let request = AuthorizationRequest(
            path: String(target.path),
            params: route.params,
            query: target.query,
            headers: head.headers.flattened,
            remoteAddress: remote
        )
        return binding.runtime.authorize(request, index: binding.index).hop(to: loop).map { decision in
            switch decision {
            case .allow(let auth):
                handshake.value.auth = auth
                return HTTPHeaders()
            case .deny(let status, let reason):
                var reply = HTTPReply.text(HTTPResponseStatus(statusCode: status), reason + "\n")
                if status == 401 {
                    reply.headers.add(name: "WWW-Authenticate", value: "Bearer")
                }
                handshake.value.refusal = reply
                return nil
            }
        }
    }

    private func upgrade(
        _ channel: any Channel,
        head: HTTPRequestHead,
        route: (slot: EndpointSlot, params: [String: String]),
        binding: EndpointBinding,
        session: Session?,
        auth: String?,
        deflate: DeflateParameters?
    ) -> EventLoopFuture<Void> {
        let target = RequestTarget(uri: head.uri)
        let declaredLimit = binding.spec.maxMessageSize
        let limit = declaredLimit ?? self.configuration.maxMessageSize
        // An endpoint that declares large messages may send large ones too (echo does).
        let outboundLimit = max(self.configuration.maxOutboundBuffer, 2 * (declaredLimit ?? 0))
        let connection = Connection(
            id: self.connections.makeID(),
            channel: channel,
            path: String(target.path),
            params: route.params,
            query: target.query,
            headers: head.headers,
            slot: route.slot,
            follows: session.map(FollowedLog.session) ?? route.slot.history.map(FollowedLog.endpointHistory),
            auth: auth,
            deflate: deflate,
            outboundLimit: outboundLimit
        )
        return channel.eventLoop.makeCompletedFuture {
            try channel.syncOptions?.setOption(.writeBufferWaterMark, value: .init(low: outboundLimit / 2, high: outboundLimit))
            let encoder = WebSocketFrameEncoder()
            try channel.pipeline.syncOperations.addHandler(encoder)
            connection.onLoop.value.outbound.attach(frames: nil, encoded: try channel.pipeline.syncOperations.context(handler: encoder))
            let handler = WebSocketConnectionHandler(
                connection: connection,
                registry: self.connections,
                keepAlive: self.services.keepAlive,
                maxMessageSize: limit,
                maxMessageRate: self.configuration.maxMessageRate,
                logger: self.logger
            )
            try channel.pipeline.syncOperations.addHandlers([
                WebSocketFrameReader(maxFrameSize: self.maxFrameSize, sink: handler),
                FrameValidator(maxMessageSize: limit, deflate: deflate != nil),
                handler,
            ])
        }
    }

    /// The largest frame any endpoint takes; a larger one is refused (1009) before it is read.
    private var maxFrameSize: Int {
        max(self.configuration.maxMessageSize, self.endpoints.largestMessageLimit)
    }

    /// RFC 6455: the key is 16 random bytes in base64; NIO's upgrader only checks it is there.
    static func hasValidKey(_ headers: HTTPHeaders) -> Bool {
        guard let key = headers.first(name: "Sec-WebSocket-Key") else { return false }
        return Data(base64Encoded: key.trimmingCharacters(in: .whitespaces))?.count == 16
    }

    /// The session a client of a session endpoint asks for: the path parameter, else the query's.
    static func sessionID(spec: EndpointSpec, params: [String: String], target: RequestTarget) -> String? {
        guard let param = spec.session?.param else { return nil }
        let id = params[param] ?? target.query[param]
        return id?.isEmpty == false ? id : nil
    }
}
