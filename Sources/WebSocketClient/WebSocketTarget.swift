import Foundation

/// Where a client connects: a `ws://` URL, loopback only unless allowed otherwise (a load test
/// aimed at someone else's server by mistake is an attack).
public struct WebSocketTarget: Sendable {
    public let host: String
    public let port: Int
    /// Path and query, e.g. `/bench` or `/ws/progress/x?last_seq=90`.
    public let uri: String
    /// Offer permessage-deflate (and use it if the server agrees).
    public var compression = false
    /// With `compression`, ask the server to compress with this smaller window (9-14 bits).
    public var serverWindowBits: Int?

    public init(url: String, allowRemote: Bool) throws {
        guard let components = URLComponents(string: url), components.scheme == "ws", let host = components.host else {
            throw WebSocketClientError.invalidURL(url)
        }
        self.host = host
        self.port = components.port ?? 80
        let path = components.percentEncodedPath.isEmpty ? "/" : components.percentEncodedPath
        self.uri = path + (components.percentEncodedQuery.map { "?" + $0 } ?? "")
        if !allowRemote, !Self.isLoopback(host) {
            throw WebSocketClientError.notLoopback(host)
        }
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host == "[::1]" || host.hasPrefix("127.")
    }
}

public enum WebSocketClientError: Error, CustomStringConvertible {
    case invalidURL(String)
    case notLoopback(String)
    case refused(String)

    public var description: String {
        switch self {
        case .invalidURL(let url): return "not a ws:// URL: \(url)"
        case .notLoopback(let host): return "\(host) is not a loopback address: pass --allow-remote to load a remote server"
        case .refused(let why): return "the host refused the connection: \(why)"
        }
    }
}
