import Foundation
import NIOCore

/// Which browser origins may open a WebSocket (cross-site WebSocket hijacking protection). A
/// handshake without an `Origin` header (not from a browser) is not affected.
struct OriginPolicy: Sendable {
    /// `*` allows every origin; `same-origin` (the default) allows pages served from the host
    /// the client connects to; anything else is an origin such as `https://app.example.com`.
    let allowed: [String]
    /// The host listens on loopback addresses only: nothing but this machine can reach it, so
    /// `same-origin` also lets in pages from any loopback origin (a dev server on another port).
    let loopbackHost: Bool

    static let sameOrigin = "same-origin"

    init(allowed: [String], loopbackHost: Bool = false) {
        self.allowed = allowed
        self.loopbackHost = loopbackHost
    }

    func allows(origin: String?, host: String?, endpointOrigins: [String]?) -> Bool {
        guard let origin else { return true }
        let allowed = endpointOrigins ?? self.allowed
        let normalized = Self.normalize(origin)
        for entry in allowed {
            if entry == "*" { return true }
            if entry == Self.sameOrigin {
                let originHost = URL(string: origin)?.hostAndPort
                if let host, let originHost, originHost.lowercased() == host.lowercased() {
                    return true
                }
                if self.loopbackHost, Self.isLoopbackOrigin(origin) {
                    return true
                }
            } else if Self.normalize(entry) == normalized {
                return true
            }
        }
        return false
    }

    /// `http(s)://localhost`, `*.localhost`, `127.x.x.x` or `[::1]`, any port: browsers resolve
    /// all of these to this machine only.
    static func isLoopbackOrigin(_ origin: String) -> Bool {
        guard let url = URL(string: origin), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
            let host = url.host?.lowercased()
        else { return false }
        return host.hasSuffix(".localhost") || Self.isLoopbackBindHost(host)
    }

    /// Whether a host name or address (`--host`, or an origin's host) is `localhost` or a
    /// loopback address.
    static func isLoopbackBindHost(_ host: String) -> Bool {
        var host = host.lowercased()
        if host.hasPrefix("["), host.hasSuffix("]") {
            host = String(host.dropFirst().dropLast())
        }
        return host == "localhost" || ((try? SocketAddress(ipAddress: host, port: 0))?.isLoopback ?? false)
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
