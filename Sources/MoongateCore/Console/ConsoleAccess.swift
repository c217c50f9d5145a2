import NIOCore
import NIOHTTP1

/// Who may open the console. It lists session ids, which are enough to read a session, so it is
/// never public by default: with `--admin-port` it lives on the admin listener (loopback unless
/// `--admin-host` says otherwise); without one, the public listener shows it to loopback peers only.
enum ConsoleAccess: Equatable {
    case allowed
    /// Served on this listener, but not to this peer.
    case localOnly
    /// Not on this listener (or turned off).
    case absent

    init(configuration: ServerConfiguration, role: HTTPRequestHandler.Role, peer: SocketAddress?) {
        guard configuration.console else {
            self = .absent
            return
        }
        switch role {
        case .admin:
            self = .allowed
        case .service(let exposesOperations):
            guard exposesOperations else {
                self = .absent
                return
            }
            self = Self.isLoopback(peer) ? .allowed : .localOnly
        }
    }

    /// The live feed only serves the console's own page: a handshake from any other origin is refused.
    static func isFromConsolePage(_ headers: HTTPHeaders) -> Bool {
        OriginPolicy(allowed: ["same-origin"]).allows(
            origin: headers.first(name: "Origin"),
            host: headers.first(name: "Host"),
            endpointOrigins: nil
        )
    }

    static func isLoopback(_ address: SocketAddress?) -> Bool {
        address?.isLoopback ?? false
    }
}

extension SocketAddress {
    /// 127.0.0.0/8, `::1`, or 127.x mapped into IPv6.
    var isLoopback: Bool {
        guard let ip = self.ipAddress else { return false }
        return ip.hasPrefix("127.") || ip == "::1" || ip.hasPrefix("::ffff:127.")
    }
}
