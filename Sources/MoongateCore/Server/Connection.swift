import NIOCore
import NIOWebSocket

/// One upgraded WebSocket client. Immutable: what changes over its life lives in its channel
/// handler (on its I/O loop) or in the script state (on the script's loop).
final class Connection: Sendable {
    let id: UInt64
    let channel: any Channel
    /// The request path, e.g. `/ws/progress/42`.
    let path: String
    let params: [String: String]
    let query: [String: String]
    /// Header names lower-cased; repeated headers joined with ", ".
    let headers: [String: String]
    let remoteAddress: String?
    /// JSON of what the endpoint's `authorize` hook returned for this client, if anything.
    let auth: String?
    let slot: EndpointSlot
    /// Batches of this client's events (its connect included) handed to the script and not yet
    /// finished. While any are, the I/O loop must not answer a message itself: its reply would
    /// overtake theirs.
    let scriptWork: NIOLoopBoundBox<Int>
    /// Where already-serialised frames are written, below the frame encoder (see `PreEncodedFrameGateway`).
    let preEncodedWriter: NIOLoopBoundBox<ChannelHandlerContext?>
    /// Broadcasts that arrived while the client's initial payload was still being computed, sent
    /// right after it; nil once the client has joined.
    let earlyBroadcasts: NIOLoopBoundBox<[ByteBuffer]?>
    /// Set once a close frame has been sent: nothing may follow it on the wire (RFC 6455 5.5.1).
    let isClosing: NIOLoopBoundBox<Bool>
    /// The session this client watches, for endpoints that declare `session = { ... }`.
    let session: Session?
    let sessionCursor: NIOLoopBoundBox<SessionCursor?>

    init(
        id: UInt64,
        channel: any Channel,
        path: String,
        params: [String: String],
        query: [String: String],
        headers: [String: String],
        slot: EndpointSlot,
        session: Session? = nil,
        auth: String? = nil
    ) {
        self.id = id
        self.channel = channel
        self.path = path
        self.params = params
        self.query = query
        self.headers = headers
        self.remoteAddress = channel.remoteAddress?.ipAddress
        self.auth = auth
        self.slot = slot
        self.scriptWork = .makeBoxSendingValue(0, eventLoop: channel.eventLoop)
        self.preEncodedWriter = .makeEmptyBox(eventLoop: channel.eventLoop)
        self.earlyBroadcasts = .makeBoxSendingValue([], eventLoop: channel.eventLoop)
        self.isClosing = .makeBoxSendingValue(false, eventLoop: channel.eventLoop)
        self.session = session
        self.sessionCursor = .makeEmptyBox(eventLoop: channel.eventLoop)
    }

    /// Flushes from the socket side of the pipeline, past every handler; must run on the channel's loop.
    func flush() {
        if let writer = self.preEncodedWriter.value {
            writer.flush()
        } else {
            self.channel.flush()
        }
    }

    /// Starts the closing handshake; safe from any thread.
    func close(code: WebSocketErrorCode, reason: String) {
        self.channel.pipeline.fireUserInboundEventTriggered(CloseRequest(code: code, reason: reason))
    }
}

/// Asks a connection's handler to send a close frame and finish the closing handshake.
struct CloseRequest: Sendable {
    var code: WebSocketErrorCode
    var reason: String
}
