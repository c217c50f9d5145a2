import NIOCore

/// What one socket read of a client adds to its endpoint's metrics, counted on the I/O loop and
/// added once when the read is over: a read of eight messages costs one round of counter updates,
/// not eight.
struct ReadTally {
    var messagesIn = 0
    var bytesIn = 0
    /// Replies the I/O loop gave itself (acks, error replies).
    var replies = 0
    var replyBytes = 0
    var acks = 0
    var errorReplies = 0

    var isEmpty: Bool { self.messagesIn == 0 && self.replies == 0 }

    mutating func received(bytes: Int) {
        self.messagesIn += 1
        self.bytesIn += bytes
    }

    mutating func replied(_ reply: ByteBuffer) {
        self.replies += 1
        self.replyBytes += reply.readableBytes
        switch Kind(of: reply) {
        case .ack: self.acks += 1
        case .error: self.errorReplies += 1
        case .other: break
        }
    }

    enum Kind {
        case ack, error, other

        private static let ackPrefix = Array(#"{"type":"ack""#.utf8)
        private static let errorPrefix = Array(#"{"type":"error""#.utf8)

        /// By the reply's first bytes.
        init(of reply: ByteBuffer) {
            self = reply.withUnsafeReadableBytes { bytes in
                bytes.starts(with: Self.ackPrefix) ? .ack : bytes.starts(with: Self.errorPrefix) ? .error : .other
            }
        }
    }
}
