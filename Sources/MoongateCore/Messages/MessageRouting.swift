import NIOCore

/// Which text messages of an endpoint need its script, and the replies the host gives itself.
struct MessageRouting: Sendable {
    /// An array, not a set: an endpoint names a few types, and comparing a few short strings costs
    /// less than hashing the message's type once per message.
    let handlerTypes: [String]
    let hasCatchAll: Bool
    let hasOnText: Bool
    /// No `on` table but an `on_text`: every text message goes to the script as it is.
    let isRawText: Bool

    init(spec: EndpointSpec) {
        self.hasCatchAll = spec.handlerTypes.contains("*")
        self.handlerTypes = Array(Set(spec.handlerTypes.filter { $0 != "*" }))
        self.hasOnText = spec.onText
        self.isRawText = spec.onText && spec.handlerTypes.isEmpty
    }

    enum Decision {
        /// The script must see it; `id` is the raw text of its top-level id, if any.
        case script(id: String?)
        /// The host can answer by itself (unless earlier messages are still with the script).
        case reply(ByteBuffer, id: String?)
    }

    func decide(_ text: ByteBuffer) -> Decision {
        if self.isRawText {
            return .script(id: nil)
        }
        return text.withUnsafeReadableBytes { bytes in
            switch JSONEnvelope.scan(bytes) {
            case .invalid(let reason):
                return self.hasOnText ? .script(id: nil) : .reply(Self.error("invalid JSON: \(reason)"), id: nil)
            case .notAnObject:
                return self.hasOnText ? .script(id: nil) : .reply(Self.error(Self.notAnObject), id: nil)
            case .object(let envelope):
                let id = envelope.id.map { String(decoding: bytes[$0], as: UTF8.self) }
                switch envelope.type {
                case .string(let type) where !envelope.hasEscapedKeys:
                    if self.handlerTypes.contains(type) || self.hasCatchAll {
                        return .script(id: id)
                    }
                    return .reply(Self.ack(id: id), id: id)
                case .absent where !self.hasCatchAll && !envelope.hasEscapedKeys:
                    return .reply(Self.ack(id: id), id: id)
                default:
                    return .script(id: id)
                }
            }
        }
    }

    static let notAnObject = "expected a JSON object with a \"type\" field"

    private static let plainAck = ByteBuffer(string: #"{"type":"ack","received":true}"#)

    static func ack(id: String?) -> ByteBuffer {
        guard let id else { return Self.plainAck }
        // Built with room for its frame header, which is then written in front of it in place.
        var buffer = ByteBuffer.framable(capacity: 38 + id.utf8.count)
        buffer.writeString(#"{"type":"ack","received":true,"id":"#)
        buffer.writeString(id)
        buffer.writeString("}")
        return buffer
    }

    static func error(_ text: String, id: String? = nil) -> ByteBuffer {
        var reply = #"{"type":"error","error":\#(jsonString(text))"#
        if let id {
            reply += #","id":\#(id)"#
        }
        return ByteBuffer(string: reply + "}")
    }
}
