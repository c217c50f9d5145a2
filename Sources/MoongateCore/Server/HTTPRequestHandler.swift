import NIOCore
import NIOHTTP1

/// Answers the plain HTTP requests that reach the server: `/healthz`, a 426 for an endpoint
/// requested without an upgrade, 404 for anything else. Removed once a connection upgrades.
final class HTTPRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    static let name = "moongate.http"

    private let endpoints: EndpointTable
    private var request: HTTPRequestHead?

    init(endpoints: EndpointTable) {
        self.endpoints = endpoints
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.request = head
        case .body:
            break
        case .end:
            guard let head = self.request else { return }
            self.request = nil
            self.respond(to: head, context: context)
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let target = RequestTarget(uri: head.uri)
        var headers = HTTPHeaders()
        let status: HTTPResponseStatus
        let body: String
        if target.path == "/healthz" && (head.method == .GET || head.method == .HEAD) {
            (status, body) = (.ok, "ok\n")
        } else if self.endpoints.route(target.path) != nil {
            headers.add(name: "Upgrade", value: "websocket")
            (status, body) = (.upgradeRequired, "this is a WebSocket endpoint: connect with a WebSocket client\n")
        } else {
            (status, body) = (.notFound, "no endpoint at \(target.path)\n")
        }
        headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        headers.add(name: "Content-Length", value: "\(body.utf8.count)")
        headers.add(name: "Connection", value: "close")
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if head.method != .HEAD {
            context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        }
        let loopBoundContext = context.loopBound
        context.writeAndFlush(self.wrapOutboundOut(.end(nil))).whenComplete { _ in
            loopBoundContext.value.close(promise: nil)
        }
    }
}

@available(*, unavailable)
extension HTTPRequestHandler: Sendable {}
