import NIOWebSocket
import WebSocketDeflate

/// Why a connection is closed because of what its peer sent, and the close frame that says so.
enum InboundFailure: Equatable {
    case messageTooLarge(limit: Int)
    /// A single frame over the limit, stopped by NIO's decoder before it was read.
    case frameTooLarge
    case rateLimited
    case invalidUTF8
    case invalidCompressedData
    case unexpectedFrame
    case fragmentedControlFrame
    case longControlFrame
    case invalidFragmentation
    case protocolViolation(String)

    /// The pipeline's error as the failure it reports; nil for an error that is not the peer's
    /// protocol (the socket reset, a broken pipe).
    init?(_ error: any Error, maxMessageSize: Int) {
        switch error {
        case let decoding as NIOWebSocketError:
            switch decoding {
            case .invalidFrameLength: self = .frameTooLarge
            case .fragmentedControlFrame: self = .fragmentedControlFrame
            case .multiByteControlFrameLength: self = .longControlFrame
            }
        case let violation as FrameViolation:
            self = .protocolViolation(violation.description)
        case is InvalidUTF8:
            self = .invalidUTF8
        case let inflation as MessageDeflate.InflateFailure:
            self = inflation == .tooLarge ? .messageTooLarge(limit: maxMessageSize) : .invalidCompressedData
        case let aggregation as NIOWebSocketFrameAggregator.Error:
            switch aggregation {
            case .accumulatedFrameSizeIsTooLarge, .tooManyFragments: self = .messageTooLarge(limit: maxMessageSize)
            default: self = .invalidFragmentation
            }
        default:
            return nil
        }
    }

    /// The protocol is still intact (the peer only sent too much or too fast), so the closing
    /// handshake runs instead of the connection failing at once.
    var keepsHandshake: Bool {
        switch self {
        case .messageTooLarge, .rateLimited: true
        default: false
        }
    }

    var closeFrame: CloseFrame {
        switch self {
        case .messageTooLarge(let limit): CloseFrame(code: .messageTooLarge, reason: "message larger than \(limit) bytes")
        case .frameTooLarge: CloseFrame(code: .messageTooLarge, reason: "frame larger than the endpoint's message limit")
        case .rateLimited: CloseFrame(code: .policyViolation, reason: "message rate limit exceeded")
        case .invalidUTF8: CloseFrame(code: .dataInconsistentWithMessage, reason: "invalid UTF-8 in a text message")
        case .invalidCompressedData: CloseFrame(code: .dataInconsistentWithMessage, reason: "invalid compressed data")
        case .unexpectedFrame: CloseFrame(code: .protocolError, reason: "unexpected frame")
        case .fragmentedControlFrame: CloseFrame(code: .protocolError, reason: "fragmented control frame")
        case .longControlFrame: CloseFrame(code: .protocolError, reason: "control frame longer than 125 bytes")
        case .invalidFragmentation: CloseFrame(code: .protocolError, reason: "invalid fragmentation")
        case .protocolViolation(let description): CloseFrame(code: .protocolError, reason: description)
        }
    }
}
