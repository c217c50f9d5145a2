import NIOCore
import NIOHTTP1
import NIOWebSocket
import WebSocketDeflate

/// One upgraded WebSocket client. Immutable: what changes over its life lives in its loop state
/// (on its I/O loop) or in the script state (on the script's loop).
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
    /// The numbered log this client follows: the session it named, on an endpoint that declares
    /// `session = { ... }`, or its endpoint's history (`history = { ... }`).
    let follows: FollowedLog?
    /// permessage-deflate, when the client offered it and the endpoint allows it.
    let deflate: DeflateParameters?
    /// Bytes that may wait to be sent to the client before it is closed as too slow (1008); a
    /// script's sends queued in one callback count too.
    let outboundLimit: Int
    /// What changes over the client's life on its I/O loop.
    /// A reference that may only be followed on the loop (`NIOLoopBound`, not a box: one
    /// allocation less per client).
    let onLoop: NIOLoopBound<ConnectionLoopState>

    /// Must run on the channel's loop, where its loop state is created.
    init(
        id: UInt64,
        channel: any Channel,
        path: String,
        params: [String: String],
        query: [String: String],
        headers: HTTPHeaders,
        slot: EndpointSlot,
        follows: FollowedLog? = nil,
        auth: String? = nil,
        deflate: DeflateParameters? = nil,
        outboundLimit: Int = 1 << 20
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
        self.follows = follows
        self.deflate = deflate
        self.outboundLimit = outboundLimit
        self.onLoop = NIOLoopBound(ConnectionLoopState(channel: channel, deflate: deflate), eventLoop: channel.eventLoop)
    }

    /// Starts the closing handshake after whatever is already queued for the client; safe from any thread.
    func close(code: WebSocketErrorCode, reason: String) {
        let onLoop = self.onLoop
        let frame = CloseFrame(code: code, reason: reason)
        if self.channel.eventLoop.inEventLoop {
            onLoop.value.outbound.close(frame)
        } else {
            self.channel.eventLoop.execute { onLoop.value.outbound.close(frame) }
        }
    }
}

/// What a connection follows. Both are a `Session` underneath (an endpoint's history is one
/// shared by its clients), but they start differently: a session client gets every event it has
/// not had, a history client the current snapshot and what happens from then on.
enum FollowedLog: Sendable {
    case session(Session)
    case endpointHistory(Session)

    var log: Session {
        switch self {
        case .session(let session), .endpointHistory(let session): session
        }
    }
}

/// A connection's mutable state, confined to its I/O loop: one box, so one loop check where a
/// broadcast or a session delivery touches several things.
final class ConnectionLoopState {
    /// Its way out, which owns its state machine.
    let outbound: OutboundGate
    /// Where it stands in its session or its endpoint's history, if it follows one.
    var cursor: SessionCursor?

    init(channel: any Channel, deflate: DeflateParameters? = nil) {
        self.outbound = OutboundGate(channel: channel, deflate: deflate)
    }
}

@available(*, unavailable)
extension ConnectionLoopState: Sendable {}

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
