import NIOCore
import NIOHTTP1
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
    /// The upgrade request's headers, kept compact; a dictionary only when a script asks.
    let requestHeaders: CompactHeaders
    /// Header names lower-cased; repeated headers joined with ", ".
    var headers: [String: String] { self.requestHeaders.flattened }
    let remoteAddress: String?
    /// JSON of what the endpoint's `authorize` hook returned for this client, if anything.
    let auth: String?
    let slot: EndpointSlot
    /// The session this client watches, for endpoints that declare `session = { ... }`.
    let session: Session?
    /// What changes over the client's life on its I/O loop.
    let onLoop: NIOLoopBoundBox<ConnectionLoopState>

    init(
        id: UInt64,
        channel: any Channel,
        path: String,
        params: [String: String],
        query: [String: String],
        headers: HTTPHeaders,
        slot: EndpointSlot,
        session: Session? = nil,
        auth: String? = nil
    ) {
        self.id = id
        self.channel = channel
        self.path = path
        self.params = params
        self.query = query
        self.requestHeaders = CompactHeaders(headers)
        self.remoteAddress = channel.remoteAddress?.ipAddress
        self.auth = auth
        self.slot = slot
        self.session = session
        self.onLoop = .makeBoxSendingValue(ConnectionLoopState(), eventLoop: channel.eventLoop)
    }

    /// Flushes from the socket side of the pipeline, past every handler; must run on the channel's loop.
    func flush() {
        let writer = self.onLoop.withValue { state in
            state.unflushedBytes = 0
            return state.preEncodedWriter
        }
        if let writer {
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

/// A connection's mutable state, confined to its I/O loop: one box, so one allocation and one
/// loop check where a broadcast touches several fields.
struct ConnectionLoopState {
    /// Batches of this client's events (its connect included) handed to the script and not yet
    /// finished. While any are, the I/O loop must not answer a message itself: its reply would
    /// overtake theirs.
    var scriptWork = 0
    /// The frame encoder's context: what is written there goes straight to the socket side of the
    /// encoder, so an already-serialised frame is not framed again. Nil once the client has gone.
    var preEncodedWriter: ChannelHandlerContext?
    /// Broadcasts that arrived while the client's initial payload was still being computed, sent
    /// right after it; nil once the client has joined.
    var earlyBroadcasts: [ByteBuffer]? = []
    /// Set once a close frame has been sent: nothing may follow it on the wire (RFC 6455 5.5.1).
    var isClosing = false
    var sessionCursor: SessionCursor?
    /// Bytes an outbound batch wrote here and has not flushed yet (see `OutboundBatch`).
    var unflushedBytes = 0

    /// Where serialised frames go while the client is open; nil once it is closing.
    var openWriter: ChannelHandlerContext? {
        self.isClosing ? nil : self.preEncodedWriter
    }
}

/// Asks a connection's handler to send a close frame and finish the closing handshake.
struct CloseRequest: Sendable {
    var code: WebSocketErrorCode
    var reason: String
}

/// A request's headers as one string of `name: value\r\n` lines, names lower-cased: one
/// allocation per client instead of a string pair per header.
struct CompactHeaders: Sendable {
    private let lines: String

    init(_ headers: HTTPHeaders) {
        var lines = ""
        lines.reserveCapacity(headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 })
        for (name, value) in headers {
            lines += name.lowercased()
            lines += ": "
            lines += value
            lines += "\r\n"
        }
        self.lines = lines
    }

    /// Repeated headers joined with ", ".
    var flattened: [String: String] {
        var flat: [String: String] = [:]
        for line in self.lines.split(separator: "\r\n") {
            // Names cannot hold ": " (RFC 9110 token), so the first one ends the name.
            guard let colon = line.firstRange(of: ": ") else { continue }
            let name = String(line[..<colon.lowerBound])
            let value = String(line[colon.upperBound...])
            flat[name] = flat[name].map { "\($0), \(value)" } ?? value
        }
        return flat
    }
}

extension HTTPHeaders {
    /// Names lower-cased; repeated headers joined with ", ".
    var flattened: [String: String] { CompactHeaders(self).flattened }
}
