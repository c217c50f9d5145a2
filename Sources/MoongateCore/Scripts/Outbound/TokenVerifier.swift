import AsyncHTTPClient
import Crypto
import Foundation
import JWTKit
import LuaBridge
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// `jwt.verify`: HS256 with the secret in `$MOONGATE_JWT_SECRET`, and RS256/384/512, PS256/384/512,
/// ES256/384/512 and EdDSA with the keys of `--jwks PATH_OR_URL`, as identity providers (Keycloak,
/// Auth0, Okta) publish them. jwt-kit checks the key-set signatures; this type picks the key by
/// `kid` (reloading the set when a token names one it does not know), keeps HS256 away from the
/// set's keys, and checks `exp`/`nbf` (with leeway) and the caller's `iss`/`aud`. HS256 is checked
/// with swift-crypto's HMAC directly: jwt-kit refuses secrets shorter than 32 bytes, which
/// deployments of the old HS256-only `jwt.verify` may have.
final class TokenVerifier: Sendable {
    static let secretVariable = ProcessSecrets.jwtSecret
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    static let leeway: Double = 30

    static let keySetAlgorithms: Set<String> = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]

    private let source: String?
    /// An unknown `kid` reloads the set at most this often (seconds), so forged kids cannot hammer
    /// the provider.
    private let unknownKeyReloadInterval: Double
    private let httpClient: HTTPClient?
    private let logger: Logger
    private let state = NIOLockedValueBox(State())

    private struct State {
        var keys = KeySet.empty
        var loadedAt = Date.distantPast
        /// The reload in flight, which every caller that needs it awaits.
        var reloading: Task<Void, Never>?
        var periodic: Task<Void, Never>?
    }

    /// The keys of one load of the set, by `kid`.
    struct KeySet: Sendable {
        let collection: JWTKeyCollection
        let kids: Set<String>
        static let empty = KeySet(collection: JWTKeyCollection(), kids: [])
    }

    init(source: String?, httpClient: HTTPClient?, logger: Logger, unknownKeyReloadInterval: Double = 1) {
        self.source = source
        self.unknownKeyReloadInterval = unknownKeyReloadInterval
        self.httpClient = httpClient
        self.logger = logger
    }

    var hasKeySet: Bool { self.source != nil }

    struct LoadFailure: Error, CustomStringConvertible {
        let description: String
    }

    /// Loads the set once (a failure stops the host at start), then every `refresh` seconds.
    func start(refresh: Double) async throws {
        guard self.source != nil else { return }
        try await self.reload()
        let task = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(refresh))
                guard let self, !Task.isCancelled else { return }
                do {
                    try await self.reload()
                } catch {
                    self.logger.warning("jwt: keeping the keys loaded before: \(error)")
                }
            }
        }
        self.state.withLockedValue { $0.periodic = task }
    }

    func stop() {
        self.state.withLockedValue { $0.periodic?.cancel() }
    }

    /// Reads the set from its file or URL and replaces the keys with it.
    private func reload() async throws {
        guard let source = self.source else { return }
        let text = try await self.read(source)
        let keys = try await Self.keySet(fromJSON: text, source: source, logger: self.logger)
        self.state.withLockedValue { state in
            state.keys = keys
            state.loadedAt = Date()
        }
        self.logger.debug("jwt: \(keys.kids.count) keys from \(source)", metadata: ["kids": "\(keys.kids.sorted())"])
    }

    private func read(_ source: String) async throws -> String {
        let lowered = source.lowercased()
        guard lowered.hasPrefix("http://") || lowered.hasPrefix("https://") else {
            guard let data = FileManager.default.contents(atPath: source) else {
                throw LoadFailure(description: "--jwks \(source): cannot read the file")
            }
            return String(decoding: data, as: UTF8.self)
        }
        guard let client = self.httpClient else {
            throw LoadFailure(description: "--jwks \(source): no HTTP client here")
        }
        do {
            var request = HTTPClientRequest(url: source)
            request.headers.add(name: "accept", value: "application/json")
            let response = try await client.execute(request, timeout: .seconds(10))
            let body = try await response.body.collect(upTo: 1 << 20)
            guard response.status == .ok else {
                throw LoadFailure(description: "--jwks \(source): HTTP \(response.status.code)")
            }
            return String(buffer: body)
        } catch let failure as LoadFailure {
            throw failure
        } catch {
            throw LoadFailure(description: "--jwks \(source): \(error)")
        }
    }

    /// Every signing key of the set that jwt-kit can use; keys for encryption, or of a kind it
    /// does not know, are skipped (with a log line) rather than failing the whole set.
    static func keySet(fromJSON text: String, source: String, logger: Logger) async throws -> KeySet {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
            let entries = object["keys"] as? [Any]
        else {
            throw LoadFailure(description: "--jwks \(source): not a JSON Web Key Set (expected {\"keys\": [...]})")
        }
        let collection = JWTKeyCollection()
        var kids: Set<String> = []
        for entry in entries {
            guard let fields = entry as? [String: Any] else { continue }
            let kid = fields["kid"] as? String ?? ""
            if let use = fields["use"] as? String, use != "sig" {
                continue
            }
            do {
                guard !kid.isEmpty else { throw LoadFailure(description: "no kid") }
                let json = try JSONSerialization.data(withJSONObject: fields)
                let jwk = try JSONDecoder().decode(JWK.self, from: json)
                try await collection.add(jwk: jwk)
                kids.insert(kid)
            } catch {
                logger.warning("jwt: skipping key '\(kid)' of \(source): \(error)")
            }
        }
        guard !kids.isEmpty else {
            throw LoadFailure(description: "--jwks \(source): no signing key in the set")
        }
        return KeySet(collection: collection, kids: kids)
    }

    /// The claims as JSON text, or why the token is refused.
    func verify(_ token: String, audience: String?, issuer: String?) async -> OperationResult {
        guard let parsed = try? ParsedToken(token) else {
            return .failure("malformed token", outcome: "refused")
        }
        let checked = parsed.algorithm == "HS256" ? Self.checkHS256(parsed) : await self.checkWithKeySet(token, parsed)
        switch checked {
        case .failure(let refusal):
            return .failure(refusal.description, outcome: "refused")
        case .success(let claims):
            if let refusal = claims.refusal(audience: audience, issuer: issuer, now: Date()) {
                return .failure(refusal, outcome: "refused")
            }
            // The claims as the token carries them, every one of them, for the script to decode.
            return OperationResult(values: [.string(parsed.payload)], outcome: "ok")
        }
    }

    private struct Refusal: Error, CustomStringConvertible {
        let description: String
    }

    /// HMAC-SHA256 over `header.payload`, compared in constant time by swift-crypto.
    private static func checkHS256(_ token: ParsedToken) -> Result<StandardClaims, Refusal> {
        guard let secret = ProcessSecrets.value(Self.secretVariable), !secret.isEmpty else {
            return .failure(Refusal(description: "HS256 tokens need the secret in $\(Self.secretVariable)"))
        }
        let key = SymmetricKey(data: Data(secret.utf8))
        guard HMAC<SHA256>.isValidAuthenticationCode(token.signature, authenticating: Data(token.signingInput.utf8), using: key) else {
            return .failure(Refusal(description: "bad signature"))
        }
        return .success(token.claims)
    }

    /// jwt-kit checks the signature with the key the token's `kid` names.
    private func checkWithKeySet(_ token: String, _ header: ParsedToken) async -> Result<StandardClaims, Refusal> {
        let keys: JWTKeyCollection
        switch await self.keys(for: header) {
        case .success(let found): keys = found
        case .failure(let refusal): return .failure(refusal)
        }
        do {
            return .success(try await keys.verify(token, as: StandardClaims.self))
        } catch let error as JWTError where error.errorType == .signatureVerificationFailed {
            return .failure(Refusal(description: "bad signature"))
        } catch {
            return .failure(Refusal(description: "invalid token: \(error)"))
        }
    }

    private func keys(for header: ParsedToken) async -> Result<JWTKeyCollection, Refusal> {
        guard Self.keySetAlgorithms.contains(header.algorithm) else {
            return .failure(Refusal(description: "unsupported algorithm \(header.algorithm)"))
        }
        guard self.source != nil else {
            return .failure(Refusal(description: "\(header.algorithm) tokens need the provider's keys: start the host with --jwks PATH_OR_URL"))
        }
        guard let kid = header.kid else {
            let keys = self.state.withLockedValue { $0.keys }
            // Without a kid, only a set of one key says which key it is.
            return keys.kids.count == 1 ? .success(keys.collection) : .failure(Refusal(description: "token has no kid"))
        }
        var keys = self.state.withLockedValue { $0.keys }
        if !keys.kids.contains(kid) {
            await self.reloadForUnknownKey()
            keys = self.state.withLockedValue { $0.keys }
        }
        guard keys.kids.contains(kid) else {
            return .failure(Refusal(description: "unknown key"))
        }
        return .success(keys.collection)
    }

    /// One reload at a time, and none sooner than `unknownKeyReloadInterval` after the last.
    private func reloadForUnknownKey() async {
        let task: Task<Void, Never>? = self.state.withLockedValue { state in
            if let running = state.reloading { return running }
            guard Date().timeIntervalSince(state.loadedAt) >= self.unknownKeyReloadInterval else { return nil }
            let task = Task {
                do {
                    try await self.reload()
                } catch {
                    self.logger.warning("jwt: reloading for an unknown kid failed, keeping the keys loaded before: \(error)")
                    self.state.withLockedValue { $0.loadedAt = Date() }
                }
                self.state.withLockedValue { $0.reloading = nil }
            }
            state.reloading = task
            return task
        }
        await task?.value
    }
}

/// A token as jwt-kit's parser reads it, before any key is chosen: its algorithm and key id,
/// the registered claims, and the claims JSON exactly as sent, for the script.
struct ParsedToken {
    let algorithm: String
    let kid: String?
    let claims: StandardClaims
    let payload: [UInt8]
    /// `header.payload`, what the signature signs.
    let signingInput: Substring
    let signature: Data

    struct Malformed: Error {}

    init(_ token: String) throws {
        let (header, claims, signature) = try DefaultJWTParser().parse(Array(token.utf8), as: StandardClaims.self)
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard let algorithm = header.alg, parts.count == 3, let payload = Self.base64URLDecode(parts[1]) else {
            throw Malformed()
        }
        self.algorithm = algorithm
        self.kid = header.kid
        self.claims = claims
        self.payload = Array(payload)
        self.signature = signature
        self.signingInput = token[..<parts[2].startIndex].dropLast()
    }

    private static func base64URLDecode(_ text: Substring) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        return Data(base64Encoded: base64)
    }
}

/// The registered claims `jwt.verify` checks; the rest reach the script untouched.
struct StandardClaims: JWTPayload {
    var exp: ExpirationClaim?
    var nbf: NotBeforeClaim?
    var iss: IssuerClaim?
    var aud: AudienceClaim?

    /// Checked after the signature, by `refusal`, so that each failure has its own reason.
    func verify(using algorithm: some JWTAlgorithm) async throws {}

    func refusal(audience: String?, issuer: String?, now: Date) -> String? {
        if let exp, exp.value.timeIntervalSince1970 + TokenVerifier.leeway < now.timeIntervalSince1970 {
            return "token expired"
        }
        if let nbf, nbf.value.timeIntervalSince1970 - TokenVerifier.leeway > now.timeIntervalSince1970 {
            return "token not yet valid"
        }
        if let issuer, self.iss?.value != issuer {
            return "wrong issuer"
        }
        if let audience, !(self.aud?.value.contains(audience) ?? false) {
            return "wrong audience"
        }
        return nil
    }
}
