import NIOSSL

/// The certificate chain and key `--tls-cert` and `--tls-key` name, read into a server context.
/// Read again on every reload, so a renewed certificate is served without a restart.
struct TLSFiles: Sendable, Equatable {
    let certificatePath: String
    let keyPath: String

    func makeContext() throws -> NIOSSLContext {
        let chain = try NIOSSLCertificate.fromPEMFile(self.certificatePath).map { NIOSSLCertificateSource.certificate($0) }
        let key = try NIOSSLPrivateKey(file: self.keyPath, format: .pem)
        let configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
        return try NIOSSLContext(configuration: configuration)
    }
}
