import Foundation

/// Which browser origins may open a WebSocket (cross-site WebSocket hijacking protection). A
/// handshake without an `Origin` header (not from a browser) is not affected.
struct OriginPolicy: Sendable {
    /// `*` allows every origin; `same-origin` (the default) allows pages served from the host
    /// the client connects to; anything else is an origin such as `https://app.example.com`.
    let allowed: [String]

    static let sameOrigin = "same-origin"

    func allows(origin: String?, host: String?, endpointOrigins: [String]?) -> Bool {
        guard let origin else { return true }
        let allowed = endpointOrigins ?? self.allowed
        let normalized = Self.normalize(origin)
        for entry in allowed {
            if entry == "*" { return true }
            if entry == Self.sameOrigin {
                if let host, let originHost = URL(string: origin)?.hostAndPort, originHost.lowercased() == host.lowercased() {
                    return true
                }
            } else if Self.normalize(entry) == normalized {
                return true
            }
        }
        return false
    }

    private static func normalize(_ origin: String) -> String {
        var text = origin.lowercased()
        while text.hasSuffix("/") { text.removeLast() }
        return text
    }
}

extension URL {
    /// `host:port` as a Host header would carry it (the port only when the URL has one).
    fileprivate var hostAndPort: String? {
        guard let host = self.host else { return nil }
        return self.port.map { "\(host):\($0)" } ?? host
    }
}
