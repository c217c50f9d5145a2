import Foundation
import NIOCore
import NIOWebSocket

/// Where one client stands in its session, on the client's I/O loop. Delivery begins once the
/// client has joined (its initial payload is out) and it is known where to resume from: `last_seq`
/// in the URL, a `{"type":"resume"}` first message, or, after `resume_wait`, its `ready` seq.
/// Delivery pulls from the session's history, so a wake-up that arrives late or twice is harmless:
/// no gap, no duplicate, always in order.
struct SessionCursor {
    struct ResumePoint {
        var lastSeq: UInt64
        var epoch: String?
    }

    let session: Session
    /// The seq announced in `ready`.
    let readySeq: UInt64
    var delivered: UInt64
    var resumePoint: ResumePoint?
    var joined = false
    var delivering = false

    init(session: Session, readySeq: UInt64, resumePoint: ResumePoint?) {
        self.session = session
        self.readySeq = readySeq
        self.delivered = readySeq
        self.resumePoint = resumePoint
    }
}

extension Connection {
    /// Joined or resume point decided; begins delivery when both are. Must run on the client's loop.
    func updateSessionCursor(_ update: (inout SessionCursor) -> Void) {
        guard var cursor = self.sessionCursor.value else { return }
        update(&cursor)
        var reset: ByteBuffer?
        if !cursor.delivering, cursor.joined, let point = cursor.resumePoint {
            cursor.delivering = true
            let otherEpoch = point.epoch.map { $0 != cursor.session.epoch } ?? false
            if otherEpoch || point.lastSeq > cursor.session.lastSeq {
                // Another incarnation of the stream (or a seq it never reached): start it over.
                reset = Self.resetMessage(cursor.session)
                cursor.delivered = 0
            } else {
                cursor.delivered = point.lastSeq
            }
        }
        self.sessionCursor.value = cursor
        if let reset {
            self.channel.write(WebSocketFrame.text(reset), promise: nil)
        }
        self.deliverSessionEvents()
    }

    /// Writes every held event the client has not had yet. Must run on the client's loop.
    func deliverSessionEvents() {
        guard var cursor = self.sessionCursor.value, cursor.delivering, self.channel.isActive else { return }
        let pending = cursor.session.events(after: cursor.delivered)
        if pending.gap {
            self.channel.write(WebSocketFrame.text(Self.resetMessage(cursor.session)), promise: nil)
        }
        guard !pending.events.isEmpty || pending.gap else { return }
        for event in pending.events {
            self.channel.write(WebSocketFrame.text(event.text), promise: nil)
        }
        cursor.delivered = pending.events.last?.seq ?? pending.lastSeq
        self.sessionCursor.value = cursor
        self.flush()
    }

    static func readyMessage(_ session: Session, seq: UInt64) -> ByteBuffer {
        let state = session.isClosed ? "closed" : "open"
        return ByteBuffer(
            string: #"{"type":"ready","session":\#(jsonString(session.id)),"epoch":"\#(session.epoch)","seq":\#(seq),"state":"\#(state)"}"#
        )
    }

    static func resetMessage(_ session: Session) -> ByteBuffer {
        let status = session.status
        let first = status.firstSeq.map(String.init) ?? "null"
        return ByteBuffer(
            string: #"{"type":"reset","session":\#(jsonString(session.id)),"epoch":"\#(session.epoch)","seq":\#(status.lastSeq),"first_seq":\#(first)}"#
        )
    }
}

/// A Swift string as a JSON string literal.
func jsonString(_ value: String) -> String {
    var escaped = "\""
    for scalar in value.unicodeScalars {
        switch scalar {
        case "\"": escaped += "\\\""
        case "\\": escaped += "\\\\"
        case "\n": escaped += "\\n"
        case "\r": escaped += "\\r"
        case "\t": escaped += "\\t"
        case "\u{0}"..."\u{1F}": escaped += String(format: "\\u%04x", scalar.value)
        default: escaped.unicodeScalars.append(scalar)
        }
    }
    return escaped + "\""
}
