import Foundation
package import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// Opens one WebSocket client connection with NIO's client upgrader, for `moongate bench` and
/// `moongate client` alike.
package enum WebSocketDial {
    /// `makeHandler` builds, on the connection's loop, the handler that takes over once upgraded;
    /// it must complete the promise it is given when it is added.
    package static func open(
        _ target: WebSocketTarget,
        on loop: any EventLoop,
        makeHandler: @escaping @Sendable (EventLoopPromise<Void>) -> any ChannelHandler
    ) -> EventLoopFuture<any Channel> {
        let upgraded = loop.makePromise(of: Void.self)
        let bootstrap = ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = NIOLoopBound(makeHandler(upgraded), eventLoop: channel.eventLoop)
                    let upgrader = NIOWebSocketClientUpgrader(
                        requestKey: Self.randomKey(),
                        maxFrameSize: 1 << 24,
                        automaticErrorHandling: true,
                        upgradePipelineHandler: { channel, response in
                            channel.eventLoop.makeCompletedFuture {
                                let agreed = response.headers[canonicalForm: "Sec-WebSocket-Extensions"].contains {
                                    $0.lowercased().hasPrefix("permessage-deflate")
                                }
                                if target.compression, agreed {
                                    try channel.pipeline.syncOperations.addHandler(ClientDeflateHandler())
                                }
                                try channel.pipeline.syncOperations.addHandler(handler.value)
                            }
                        }
                    )
                    // A server may send its first message in the same read as the 101: keep it.
                    try channel.pipeline.syncOperations.addHTTPClientHandlers(
                        leftOverBytesStrategy: .forwardBytes,
                        withClientUpgrade: (upgraders: [upgrader], completionHandler: { context in
                            context.pipeline.syncOperations.removeHandler(name: UpgradeRequest.name, promise: nil)
                        })
                    )
                    try channel.pipeline.syncOperations.addHandler(UpgradeRequest(target: target, upgraded: upgraded), name: UpgradeRequest.name)
                }
            }
        return bootstrap.connect(host: target.host, port: target.port).flatMap { channel in
            upgraded.futureResult.map { channel }
        }.flatMapError { error in
            upgraded.fail(error)
            return loop.makeFailedFuture(error)
        }
    }

    /// Sends close 1000, then closes the socket.
    package static func close(_ channel: any Channel) {
        var data = ByteBuffer()
        data.writeInteger(UInt16(1000))
        let frame = WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: data)
        channel.writeAndFlush(frame).whenComplete { _ in channel.close(promise: nil) }
    }

    /// Whether the server agreed to permessage-deflate on this upgraded connection.
    package static func isCompressed(_ channel: any Channel) -> EventLoopFuture<Bool> {
        channel.pipeline.handler(type: ClientDeflateHandler.self).map { _ in true }.recover { _ in false }
    }

    package static func randomKey() -> String {
        Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
    }
}

/// Sends the upgrade request; reports an answer other than 101 with the host's explanation (the
/// body, or its JSON `error` field).
final class UpgradeRequest: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart
    static let name = "moongate.upgrade-request"
    /// Enough of a refusal's body for its explanation.
    static let explanationLimit = 2048

    private let target: WebSocketTarget
    private let upgraded: EventLoopPromise<Void>
    private var refusal: (status: HTTPResponseStatus, body: ByteBuffer)?

    init(target: WebSocketTarget, upgraded: EventLoopPromise<Void>) {
        self.target = target
        self.upgraded = upgraded
    }

    func channelActive(context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "\(self.target.host):\(self.target.port)")
        headers.add(name: "Content-Length", value: "0")
        if self.target.compression {
            let window = self.target.serverWindowBits.map { "; server_max_window_bits=\($0)" } ?? ""
            headers.add(name: "Sec-WebSocket-Extensions", value: ClientDeflateHandler.offer + window)
        }
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: self.target.uri, headers: headers)
        context.write(self.wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let response):
            self.refusal = (response.status, ByteBuffer())
        case .body(var part):
            if var refusal = self.refusal, refusal.body.readableBytes < Self.explanationLimit {
                refusal.body.writeBuffer(&part)
                self.refusal = refusal
            }
        case .end:
            self.refuse(context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.refuse(context: context)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.upgraded.fail(error)
        context.close(promise: nil)
    }

    private func refuse(context: ChannelHandlerContext) {
        guard let refusal = self.refusal else { return }
        self.refusal = nil
        let text = String(buffer: refusal.body).trimmingCharacters(in: .whitespacesAndNewlines)
        let explanation = (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])?["error"] as? String ?? text
        let status = "HTTP \(refusal.status.code) \(refusal.status.reasonPhrase)"
        self.upgraded.fail(WebSocketClientError.refused(explanation.isEmpty ? status : "\(status): \(explanation.prefix(300))"))
        context.close(promise: nil)
    }
}


@available(*, unavailable)
extension UpgradeRequest: Sendable {}
