package import NIOCore
import NIOEmbedded
package import NIOWebSocket

/// Turns a frame into the exact bytes NIO's `WebSocketFrameEncoder` puts on the wire, as one
/// buffer, so a broadcast is framed once and every recipient gets the same bytes. Confined to the
/// script loop that owns it.
package final class FrameSerializer {
    private let channel = EmbeddedChannel(handler: WebSocketFrameEncoder())

    package init() {}

    package func serialize(_ frame: WebSocketFrame) -> ByteBuffer {
        do {
            try self.channel.writeOutbound(frame)
            var bytes = ByteBuffer()
            bytes.reserveCapacity(frame.length + 10)
            while let part = try self.channel.readOutbound(as: ByteBuffer.self) {
                bytes.writeImmutableBuffer(part)
            }
            return bytes
        } catch {
            preconditionFailure("encoding a server frame in memory cannot fail: \(error)")
        }
    }
}

@available(*, unavailable)
extension FrameSerializer: Sendable {}
