import Foundation

/// What a connection agreed for permessage-deflate (RFC 7692). The host always answers with
/// `server_no_context_takeover` and `client_no_context_takeover`: every message is compressed on
/// its own, in both directions, so one compressed broadcast serves every recipient and no
/// connection keeps a compressor or decompressor between messages.
package struct DeflateParameters: Sendable, Equatable {
    /// The LZ77 window the host may use for what it sends (9...15 bits).
    package var serverMaxWindowBits: Int = 15

    package init(serverMaxWindowBits: Int = 15) {
        self.serverMaxWindowBits = serverMaxWindowBits
    }

    /// The value of `Sec-WebSocket-Extensions` in the 101.
    package var responseHeader: String {
        var header = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        if self.serverMaxWindowBits < 15 {
            header += "; server_max_window_bits=\(self.serverMaxWindowBits)"
        }
        return header
    }

    /// The first offer in the client's `Sec-WebSocket-Extensions` headers that the host can accept
    /// (RFC 7692 §5: offers in the client's order of preference), or nil: then the connection
    /// goes uncompressed. An offer with an unknown or repeated parameter, or a value out of range,
    /// is declined, as the RFC asks; so is `server_max_window_bits=8`, which zlib cannot honour.
    package static func negotiate(offers headers: [String]) -> DeflateParameters? {
        for offer in Self.offers(in: headers) where offer.name == "permessage-deflate" {
            if let accepted = Self.accept(offer.parameters) {
                return accepted
            }
        }
        return nil
    }

    private static func accept(_ parameters: [(name: String, value: String?)]) -> DeflateParameters? {
        var accepted = DeflateParameters()
        var seen: Set<String> = []
        for (name, value) in parameters {
            guard seen.insert(name).inserted else { return nil }
            switch name {
            case "server_no_context_takeover", "client_no_context_takeover":
                guard value == nil else { return nil }
            case "server_max_window_bits":
                guard let value, let bits = Self.windowBits(value), bits >= 9 else { return nil }
                accepted.serverMaxWindowBits = bits
            case "client_max_window_bits":
                // A hint that we may limit the client's window; we inflate with the largest.
                if let value, Self.windowBits(value) == nil { return nil }
            default:
                return nil
            }
        }
        return accepted
    }

    private static func windowBits(_ text: String) -> Int? {
        guard !text.isEmpty, text.allSatisfy(\.isASCII), text.first != "0", let bits = Int(text), (8...15).contains(bits) else {
            return nil
        }
        return bits
    }

    /// RFC 6455 §9.1: `extension-list = 1#extension`, `extension = name *( ";" param )`,
    /// `param = name [ "=" (token | quoted-string) ]`.
    package static func offers(in headers: [String]) -> [(name: String, parameters: [(name: String, value: String?)])] {
        headers.flatMap { $0.split(separator: ",") }.map { offer in
            let parts = offer.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
            let parameters = parts.dropFirst().map { part -> (name: String, value: String?) in
                guard let equals = part.firstIndex(of: "=") else { return (part.lowercased(), nil) }
                var value = part[part.index(after: equals)...].trimmingCharacters(in: .whitespaces)
                if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") {
                    value = String(value.dropFirst().dropLast())
                }
                return (part[..<equals].trimmingCharacters(in: .whitespaces).lowercased(), value)
            }
            return ((parts.first ?? "").lowercased(), parameters)
        }
    }
}
