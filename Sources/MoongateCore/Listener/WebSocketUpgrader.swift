import NIOCore
import NIOHTTP1
import NIOWebSocket

/// The WebSocket upgrade with the pipeline left to us: NIO's upgrader checks the request and
/// writes the 101 (`shouldUpgrade` decides, as before), but after it `upgradePipeline` installs
/// every handler itself. NIO's own `upgrade` would add a `ByteToMessageHandler` around its frame
/// decoder, which an endpoint's connection replaces with `WebSocketFrameReader`; a handler that
/// is added and then removed would hand the reader frames instead of bytes if the client's first
/// frames arrived before its removal completed.
struct WebSocketUpgrader: HTTPServerProtocolUpgrader, Sendable {
    private let handshake: NIOWebSocketServerUpgrader
    private let upgradePipeline: @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<Void>

    init(
        shouldUpgrade: @escaping @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<HTTPHeaders?>,
        upgradePipeline: @escaping @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<Void>
    ) {
        self.handshake = NIOWebSocketServerUpgrader(
            shouldUpgrade: shouldUpgrade,
            upgradePipelineHandler: { channel, _ in channel.eventLoop.makeSucceededVoidFuture() }
        )
        self.upgradePipeline = upgradePipeline
    }

    var supportedProtocol: String { self.handshake.supportedProtocol }
    var requiredUpgradeHeaders: [String] { self.handshake.requiredUpgradeHeaders }

    func buildUpgradeResponse(channel: any Channel, upgradeRequest: HTTPRequestHead, initialResponseHeaders: HTTPHeaders) -> EventLoopFuture<HTTPHeaders> {
        self.handshake.buildUpgradeResponse(channel: channel, upgradeRequest: upgradeRequest, initialResponseHeaders: initialResponseHeaders)
    }

    func upgrade(context: ChannelHandlerContext, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<Void> {
        self.upgradePipeline(context.channel, upgradeRequest)
    }
}
