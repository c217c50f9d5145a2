import AsyncHTTPClient
import Foundation
import LuaBridge
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// One `http.request` from a script: redirects followed here (at most five), each hop checked
/// against `--allow-net`; the response body read up to `--http-max-body`.
struct HTTPCall: Sendable {
    var method: String
    var url: String
    var headers: [(String, String)]
    var body: [UInt8]?
    var timeout: TimeAmount

    static let defaultTimeout: Double = 10
    static let maxRedirects = 5

    func perform(with outbound: ScriptOutbound) async -> OperationResult {
        guard let client = outbound.httpClient else {
            return .failure("http is not available here")
        }
        let deadline = NIODeadline.now() + self.timeout
        var method = self.method
        var url = self.url
        var body = self.body
        var hops = 0
        while true {
            guard let target = URLComponents(string: url), let scheme = target.scheme?.lowercased(), scheme == "http" || scheme == "https",
                let host = target.host, !host.isEmpty
            else {
                return .failure("\(url) is not an http:// or https:// URL", outcome: "invalid")
            }
            let port = target.port ?? (scheme == "https" ? 443 : 80)
            if let refusal = outbound.refusal(host: host, port: port) {
                return .failure(refusal, outcome: "refused")
            }
            do {
                var request = HTTPClientRequest(url: url)
                request.method = HTTPMethod(rawValue: method)
                for (name, value) in self.headers {
                    request.headers.add(name: name, value: value)
                }
                if let body {
                    request.body = .bytes(ByteBuffer(bytes: body))
                }
                let response = try await client.execute(request, deadline: deadline)
                if let next = Self.redirect(from: url, response: response), hops < Self.maxRedirects {
                    _ = try? await response.body.collect(upTo: 64 << 10)
                    hops += 1
                    url = next
                    // As browsers do: 303 always, and 301/302 after a POST, become a GET without a body.
                    if response.status == .seeOther || (method == "POST" && [301, 302].contains(response.status.code)) {
                        method = "GET"
                        body = nil
                    }
                    continue
                }
                let received = try await response.body.collect(upTo: outbound.policy.httpMaxBody)
                return OperationResult(values: [Self.luaResponse(response, body: received)], outcome: "ok")
            } catch {
                return Self.failure(error, maxBody: outbound.policy.httpMaxBody)
            }
        }
    }

    private static func redirect(from url: String, response: HTTPClientResponse) -> String? {
        guard [301, 302, 303, 307, 308].contains(response.status.code), let location = response.headers.first(name: "location"),
            let base = URL(string: url), let next = URL(string: location, relativeTo: base)
        else { return nil }
        return next.absoluteString
    }

    private static func luaResponse(_ response: HTTPClientResponse, body: ByteBuffer) -> LuaValue {
        var headers: [(String, [String])] = []
        for (name, value) in response.headers {
            let name = name.lowercased()
            if let index = headers.firstIndex(where: { $0.0 == name }) {
                headers[index].1.append(value)
            } else {
                headers.append((name, [value]))
            }
        }
        return .table([
            ("status", .integer(Int(response.status.code))),
            ("headers", .table(headers.map { ($0.0, .text($0.1.joined(separator: ", "))) })),
            ("body", .string(Array(body.readableBytesView))),
        ])
    }

    /// `timeout`, `connection refused`, `host not found`, `TLS error: ...`, ...
    static func failure(_ error: any Error, maxBody: Int) -> OperationResult {
        if let error = error as? HTTPClientError {
            switch error {
            case .deadlineExceeded, .readTimeout, .writeTimeout, .connectTimeout, .tlsHandshakeTimeout, .getConnectionFromPoolTimeout:
                return .failure("timeout", outcome: "timeout")
            case .cancelled:
                return .failure("cancelled", outcome: "cancelled")
            case .remoteConnectionClosed:
                return .failure("the server closed the connection")
            default:
                return .failure("\(error)")
            }
        }
        if error is NIOTooManyBytesError {
            return .failure("response body is larger than \(maxBody) bytes (--http-max-body)", outcome: "too_large")
        }
        if error is CancellationError {
            return .failure("cancelled", outcome: "cancelled")
        }
        if let error = error as? NIOConnectionError {
            if error.connectionErrors.contains(where: { ($0.error as? IOError)?.errnoCode == ECONNREFUSED }) {
                return .failure("connection refused", outcome: "refused_by_peer")
            }
            if error.dnsAError != nil || error.dnsAAAAError != nil, error.connectionErrors.isEmpty {
                return .failure("host not found: \(error.host)")
            }
            return .failure("cannot connect to \(error.host):\(error.port)")
        }
        if let error = error as? IOError, error.errnoCode == ECONNREFUSED {
            return .failure("connection refused", outcome: "refused_by_peer")
        }
        if error is NIOSSLError || error is BoringSSLError || error is NIOSSLExtraError {
            return .failure("TLS error: \(error)", outcome: "tls")
        }
        if let error = error as? ChannelError, case .connectTimeout = error {
            return .failure("timeout", outcome: "timeout")
        }
        return .failure("\(error)")
    }
}
