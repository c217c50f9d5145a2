import Foundation
import NIOSSL
import PostgresNIO

/// `postgres://USER:PASS@HOST:PORT/DB?sslmode=...` as libpq reads it, for `--cluster` and `--postgres`: a host
/// that starts with `/` (or `?host=/dir`) is the directory of a unix socket, and `sslmode` is
/// `disable`, `prefer` (the default), `require` or `verify-full`.
struct PostgresURL: Sendable, CustomStringConvertible {
    enum Endpoint: Sendable {
        case tcp(host: String, port: Int)
        case socket(path: String)
    }

    let endpoint: Endpoint
    let username: String
    let password: String?
    let database: String
    let sslMode: String

    /// Where, without the password: for logs and errors.
    var description: String {
        switch self.endpoint {
        case .tcp(let host, let port): return "\(self.username)@\(host):\(port)/\(self.database)"
        case .socket(let path): return "\(self.username)@\(path)/\(self.database)"
        }
    }

    struct Invalid: Error, CustomStringConvertible {
        let flag: String
        let reason: String
        var description: String {
            "\(self.flag): \(self.reason) (expected postgres://USER:PASSWORD@HOST:PORT/DATABASE)"
        }
    }

    /// `flag` names the option the URL came from, in errors.
    init(_ text: String, flag: String = "--cluster") throws {
        func invalid(_ reason: String) -> Invalid { Invalid(flag: flag, reason: reason) }
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
            scheme == "postgres" || scheme == "postgresql"
        else {
            throw invalid("not a postgres:// URL")
        }
        let query = Dictionary(
            (components.queryItems ?? []).map { ($0.name, $0.value ?? "") },
            uniquingKeysWith: { _, last in last }
        )
        guard let username = components.percentEncodedUser?.removingPercentEncoding ?? query["user"], !username.isEmpty
        else {
            throw invalid("no user name")
        }
        self.username = username
        self.password = components.percentEncodedPassword?.removingPercentEncoding ?? query["password"]
        let path = components.percentEncodedPath.removingPercentEncoding ?? ""
        let database = path.hasPrefix("/") ? String(path.dropFirst()) : path
        guard !database.isEmpty else {
            throw invalid("no database name")
        }
        self.database = database
        let port: Int
        if let given = components.port ?? query["port"].flatMap(Int.init) {
            guard (1...65535).contains(given) else { throw invalid("port \(given) is out of range") }
            port = given
        } else {
            port = 5432
        }
        let host = components.percentEncodedHost?.removingPercentEncoding.flatMap { $0.isEmpty ? nil : $0 } ?? query["host"]
        guard let host else {
            throw invalid("no host")
        }
        self.endpoint = host.hasPrefix("/") ? .socket(path: "\(host)/.s.PGSQL.\(port)") : .tcp(host: host, port: port)
        self.sslMode = query["sslmode"] ?? "prefer"
        guard ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"].contains(self.sslMode) else {
            throw invalid("unknown sslmode '\(self.sslMode)'")
        }
    }

    /// libpq's `require` encrypts without checking the certificate; `verify-*` check it against
    /// the system's roots.
    private func tlsConfiguration() -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        if !self.sslMode.hasPrefix("verify") {
            tls.certificateVerification = .none
        }
        return tls
    }

    var clientConfiguration: PostgresClient.Configuration {
        switch self.endpoint {
        case .socket(let path):
            return .init(unixSocketPath: path, username: self.username, password: self.password, database: self.database)
        case .tcp(let host, let port):
            let tls: PostgresClient.Configuration.TLS
            switch self.sslMode {
            case "disable": tls = .disable
            case "allow", "prefer": tls = .prefer(self.tlsConfiguration())
            default: tls = .require(self.tlsConfiguration())
            }
            return .init(host: host, port: port, username: self.username, password: self.password, database: self.database, tls: tls)
        }
    }

    func connectionConfiguration() throws -> PostgresConnection.Configuration {
        switch self.endpoint {
        case .socket(let path):
            return .init(unixSocketPath: path, username: self.username, password: self.password, database: self.database)
        case .tcp(let host, let port):
            let tls: PostgresConnection.Configuration.TLS
            switch self.sslMode {
            case "disable": tls = .disable
            case "allow", "prefer": tls = .prefer(try NIOSSLContext(configuration: self.tlsConfiguration()))
            default: tls = .require(try NIOSSLContext(configuration: self.tlsConfiguration()))
            }
            return .init(host: host, port: port, username: self.username, password: self.password, database: self.database, tls: tls)
        }
    }
}
