/// Which close codes may appear on the wire (RFC 6455 section 7.4).
enum CloseCode {
    /// Codes a peer may send in a close frame; anything else is a protocol error (1002).
    static func isValidReceived(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1014, 3000...4999: return true
        default: return false
        }
    }

    static func isValidToSend(_ code: Int) -> Bool {
        code >= 0 && code <= Int(UInt16.max) && isValidReceived(UInt16(code))
    }
}
