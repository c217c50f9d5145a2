import AsyncHTTPClient
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL

/// The host's outbound services for scripts: the policy, one HTTP client with pooled connections
/// on the I/O loops, the databases and the token keys; opened before the scripts load and shut
/// down with the host.
final class ScriptOutbound: Sendable {
    let policy: OutboundPolicy
    /// nil for `moongate check`, which runs no callbacks.
    let httpClient: HTTPClient?
    let tokens: TokenVerifier
    private let opened = NIOLockedValueBox(ScriptDatabases.none)
    /// The host's own listener, which scripts may always call (`server_url()`): set once bound.
    private let ownAddress = NIOLockedValueBox<OwnAddress?>(nil)

    struct OwnAddress: Sendable {
        let hosts: Set<String>
        let port: Int
        let scheme: String
        let urlHost: String
    }

    init(policy: OutboundPolicy, group: (any EventLoopGroup)?, logger: Logger) {
        self.policy = policy
        guard let group else {
            self.httpClient = nil
            self.tokens = TokenVerifier(source: nil, httpClient: nil, logger: logger)
            return
        }
        var tls = TLSConfiguration.makeClientConfiguration()
        // NIOSSL reads the system's bundle only; honour the usual variable, as curl and OpenSSL do.
        if let bundle = ProcessInfo.processInfo.environment["SSL_CERT_FILE"], !bundle.isEmpty {
            tls.trustRoots = .file(bundle)
        }
        if let caFile = policy.caFile {
            tls.additionalTrustRoots = [.file(caFile)]
        }
        var configuration = HTTPClient.Configuration(tlsConfiguration: tls)
        // Redirects are followed by the call itself, so that every hop passes --allow-net.
        configuration.redirectConfiguration = .disallow
        configuration.timeout = HTTPClient.Configuration.Timeout(connect: .seconds(10))
        // A refused connection is the script's answer ("connection refused"), not a reason to
        // retry until the deadline.
        configuration.connectionPool.retryConnectionEstablishment = false
        let client = HTTPClient(eventLoopGroupProvider: .shared(group), configuration: configuration)
        self.httpClient = client
        self.tokens = TokenVerifier(source: policy.jwks, httpClient: client, logger: logger)
    }

    var databases: ScriptDatabases { self.opened.withLockedValue { $0 } }

    /// Opens the databases and loads the token keys: a failure stops the host with its reason.
    func open(loop: any EventLoop, logger: Logger) async throws {
        let databases = try await ScriptDatabases.open(self.policy.databases, loop: loop, logger: logger)
        do {
            try await self.tokens.start(refresh: self.policy.jwksRefresh)
        } catch {
            await databases.close()
            throw error
        }
        self.opened.withLockedValue { $0 = databases }
    }

    func listening(host: String, port: Int, tls: Bool) {
        var hosts: Set<String> = ["127.0.0.1", "localhost", "::1", host.lowercased()]
        hosts.remove("0.0.0.0")
        hosts.remove("::")
        self.ownAddress.withLockedValue {
            $0 = OwnAddress(hosts: hosts, port: port, scheme: tls ? "https" : "http", urlHost: Self.urlHost(listeningOn: host))
        }
    }

    /// How the host's own URL names it: loopback where it listens on every address (or on
    /// loopback), else the address it listens on; IPv6 in brackets.
    static func urlHost(listeningOn host: String) -> String {
        switch OutboundPolicy.bare(host) {
        case "0.0.0.0", "127.0.0.1", "localhost", "": return "127.0.0.1"
        case "::", "::1": return "[::1]"
        case let other where other.contains(":"): return "[\(other)]"
        case let other: return other
        }
    }

    /// `http://127.0.0.1:PORT` (or the address it listens on) of the host's own listener, once it listens.
    var ownURL: String? {
        self.ownAddress.withLockedValue { address in
            address.map { "\($0.scheme)://\($0.urlHost):\($0.port)" }
        }
    }

    /// Why a script may not reach `host:port`; nil if it may (allowed, or the host itself).
    func refusal(host: String, port: Int) -> String? {
        let host = OutboundPolicy.bare(host)
        let own = self.ownAddress.withLockedValue { $0 }
        if let own, own.port == port, own.hosts.contains(host) {
            return nil
        }
        return self.policy.refusal(host: host, port: port)
    }

    func shutdown() async {
        self.tokens.stop()
        await self.databases.close()
        try? await self.httpClient?.shutdown()
    }
}
