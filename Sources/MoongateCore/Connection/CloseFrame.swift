import NIOCore
import NIOWebSocket

/// What a close frame says, checked once for every close the host sends: a code a server may
/// put on the wire (RFC 6455 7.4) and a reason that fits a control frame.
struct CloseFrame: Equatable, Sendable {
    /// A control frame holds 125 bytes: the code's two and at most 123 of reason.
    static let maxReasonBytes = 123

    /// Nil for an empty payload (a peer that sent no code is answered without one).
    let code: WebSocketErrorCode?
    let reason: String

    /// A code no server may send (1005, 1006, 1015, out of range) becomes 1011; a reason longer
    /// than a control frame allows is cut at a character boundary.
    init(code: WebSocketErrorCode?, reason: String = "") {
        guard let code else {
            self.code = nil
            self.reason = ""
            return
        }
        self.code = CloseCode.isValidToSend(Int(UInt16(webSocketErrorCode: code))) ? code : .unexpectedServerError
        self.reason = Self.truncated(reason)
    }

    static func truncated(_ reason: String) -> String {
        guard reason.utf8.count > Self.maxReasonBytes else { return reason }
        var kept = ""
        var bytes = 0
        for character in reason {
            bytes += character.utf8.count
            guard bytes <= Self.maxReasonBytes else { break }
            kept.append(character)
        }
        return kept
    }

    var wireCode: UInt16? { self.code.map { UInt16(webSocketErrorCode: $0) } }

    func frame(allocator: ByteBufferAllocator) -> WebSocketFrame {
        var data = allocator.buffer(capacity: 2 + self.reason.utf8.count)
        if let code = self.code {
            data.write(webSocketErrorCode: code)
            data.writeString(self.reason)
        }
        return WebSocketFrame(fin: true, opcode: .connectionClose, data: data)
    }

    /// The answer to a peer's close frame: its code echoed, an empty payload for an empty one,
    /// 1002 for a malformed or reserved code and 1007 for a reason that is not UTF-8. Also
    /// returns the code the peer sent, as it is reported (nil when it sent none).
    static func answer(toPeer payload: ByteBuffer) -> (reply: CloseFrame, peerCode: WebSocketErrorCode?) {
        var payload = payload
        switch payload.readableBytes {
        case 0:
            return (CloseFrame(code: nil), nil)
        case 1:
            return (CloseFrame(code: .protocolError), nil)
        default:
            let code = payload.readInteger(as: UInt16.self)!
            let peerCode = WebSocketErrorCode(codeNumber: Int(code))
            if !CloseCode.isValidReceived(code) {
                return (CloseFrame(code: .protocolError), peerCode)
            }
            if !payload.isValidUTF8 {
                return (CloseFrame(code: .dataInconsistentWithMessage), peerCode)
            }
            return (CloseFrame(code: peerCode), peerCode)
        }
    }
}
