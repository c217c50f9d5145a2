import AsyncHTTPClient
import Foundation
import NIOCore
import NIOSSL

/// The host's outbound services for scripts: the policy, and one HTTP client with pooled
/// connections on the I/O loops, shut down with the host.
final class ScriptOutbound: Sendable {
    let policy: OutboundPolicy
    /// nil for `moongate check`, which runs no callbacks.
    let httpClient: HTTPClient?

    init(policy: OutboundPolicy, group: (any EventLoopGroup)?) {
        self.policy = policy
        guard let group else {
            self.httpClient = nil
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
        self.httpClient = HTTPClient(eventLoopGroupProvider: .shared(group), configuration: configuration)
    }

    func shutdown() async {
        try? await self.httpClient?.shutdown()
    }
}
