import Foundation
import JWTKit
import Logging
import XCTest

@testable import MoongateCore

/// `jwt.verify` without sockets: a key set in a file, tokens signed by jwt-kit with the private
/// halves, each refusal with its own reason.
final class TokenVerifierTests: XCTestCase {
    private var folder: URL!
    private var keySetFile: URL { self.folder.appendingPathComponent("jwks.json") }

    override func setUpWithError() throws {
        self.folder = FileManager.default.temporaryDirectory.appendingPathComponent("tokens-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: self.folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: self.folder)
    }

    struct Claims: JWTPayload {
        var sub: String
        var role: String?
        var exp: ExpirationClaim?
        var nbf: NotBeforeClaim?
        var iss: IssuerClaim?
        var aud: AudienceClaim?
        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    private func writeKeySet(_ keys: [(kid: String, key: ES256PrivateKey)]) throws {
        let entries = keys.map { entry in
            [
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": entry.kid,
                "x": entry.key.parameters!.x, "y": entry.key.parameters!.y,
            ]
        }
        // An encryption key, as Keycloak lists one, is skipped rather than failing the set.
        let encryption: [String: String] = ["kty": "RSA", "use": "enc", "alg": "RSA-OAEP", "kid": "enc-1", "n": "AQAB", "e": "AQAB"]
        let set: [String: Any] = ["keys": entries + [encryption]]
        try JSONSerialization.data(withJSONObject: set).write(to: self.keySetFile)
    }

    private func sign(_ claims: Claims, with key: ES256PrivateKey, kid: String) async throws -> String {
        let keys = await JWTKeyCollection().add(ecdsa: key, kid: JWKIdentifier(string: kid))
        return try await keys.sign(claims, kid: JWKIdentifier(string: kid))
    }

    private func verifier(unknownKeyReloadInterval: Double = 1) async throws -> TokenVerifier {
        let verifier = TokenVerifier(
            source: self.keySetFile.path,
            httpClient: nil,
            logger: Logger(label: "test"),
            unknownKeyReloadInterval: unknownKeyReloadInterval
        )
        try await verifier.start(refresh: 3600)
        return verifier
    }

    private func reason(_ result: OperationResult) -> String? {
        guard result.values.count == 2, case .string(let bytes) = result.values[1] else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    func testAValidTokenGivesEveryClaimAndEachBadOneItsReason() async throws {
        let key = ES256PrivateKey()
        try self.writeKeySet([("k1", key)])
        let verifier = try await self.verifier()
        defer { verifier.stop() }
        let later = Date().addingTimeInterval(600)
        let good = Claims(sub: "ada", role: "admin", exp: .init(value: later), iss: "https://idp.example", aud: "moongate")

        let valid = await verifier.verify(try await self.sign(good, with: key, kid: "k1"), audience: "moongate", issuer: "https://idp.example")
        XCTAssertEqual(valid.outcome, "ok")
        guard case .string(let payload) = valid.values.first else { return XCTFail("no claims: \(valid)") }
        let claims = try JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any]
        XCTAssertEqual(claims?["role"] as? String, "admin")

        var expired = good
        expired.exp = .init(value: Date().addingTimeInterval(-120))
        let cases: [(String, String?, String?, String)] = [
            (try await self.sign(expired, with: key, kid: "k1"), nil, nil, "token expired"),
            (try await self.sign(good, with: key, kid: "k1"), "someone-else", nil, "wrong audience"),
            (try await self.sign(good, with: key, kid: "k1"), nil, "https://evil.example", "wrong issuer"),
            (try await self.sign(good, with: ES256PrivateKey(), kid: "k1"), nil, nil, "bad signature"),
            (try await self.sign(good, with: ES256PrivateKey(), kid: "nobody"), nil, nil, "unknown key"),
            ("not.a.token", nil, nil, "malformed token"),
        ]
        for (token, audience, issuer, expected) in cases {
            let result = await verifier.verify(token, audience: audience, issuer: issuer)
            XCTAssertEqual(self.reason(result), expected, token)
        }
    }

    func testAnEdDSAKeyOfTheSetVerifiesItsTokens() async throws {
        let key = try EdDSA.PrivateKey(curve: .ed25519)
        let x = key.publicKey.rawRepresentation.base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        let set: [String: Any] = ["keys": [["kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": "ed-1", "x": x]]]
        try JSONSerialization.data(withJSONObject: set).write(to: self.keySetFile)
        let verifier = try await self.verifier()
        defer { verifier.stop() }
        let keys = await JWTKeyCollection().add(eddsa: key, kid: "ed-1")
        let token = try await keys.sign(Claims(sub: "ada"), kid: "ed-1")
        let result = await verifier.verify(token, audience: nil, issuer: nil)
        XCTAssertEqual(result.outcome, "ok", "\(result)")
        let forged = try await JWTKeyCollection().add(eddsa: try EdDSA.PrivateKey(curve: .ed25519), kid: "ed-1").sign(Claims(sub: "eve"), kid: "ed-1")
        let refused = await verifier.verify(forged, audience: nil, issuer: nil)
        XCTAssertEqual(self.reason(refused), "bad signature")
    }

    func testATamperedPayloadAndAlgorithmNoneAreRefused() async throws {
        let key = ES256PrivateKey()
        try self.writeKeySet([("k1", key)])
        let verifier = try await self.verifier()
        defer { verifier.stop() }
        let parts = try await self.sign(Claims(sub: "ada"), with: key, kid: "k1").split(separator: ".")
        let forged = Data(#"{"sub":"eve"}"#.utf8).base64EncodedString().replacingOccurrences(of: "=", with: "")
        let tampered = await verifier.verify("\(parts[0]).\(forged).\(parts[2])", audience: nil, issuer: nil)
        XCTAssertEqual(self.reason(tampered), "bad signature")
        let none = Data(#"{"alg":"none","kid":"k1"}"#.utf8).base64EncodedString().replacingOccurrences(of: "=", with: "")
        let unsigned = await verifier.verify("\(none).\(parts[1]).", audience: nil, issuer: nil)
        XCTAssertEqual(self.reason(unsigned), "unsupported algorithm none")
    }

    func testAnUnknownKidReloadsTheSetSoARotatedKeyIsAccepted() async throws {
        let first = ES256PrivateKey()
        try self.writeKeySet([("k1", first)])
        let verifier = try await self.verifier(unknownKeyReloadInterval: 0)
        defer { verifier.stop() }
        let rotated = ES256PrivateKey()
        let token = try await self.sign(Claims(sub: "ada"), with: rotated, kid: "k2")
        let before = await verifier.verify(token, audience: nil, issuer: nil)
        XCTAssertEqual(self.reason(before), "unknown key")
        try self.writeKeySet([("k1", first), ("k2", rotated)])
        let after = await verifier.verify(token, audience: nil, issuer: nil)
        XCTAssertEqual(after.outcome, "ok", "\(after)")
    }

    func testASetWithoutSigningKeysOrNoFileStopsTheStart() async throws {
        let missing = TokenVerifier(source: self.folder.appendingPathComponent("none.json").path, httpClient: nil, logger: Logger(label: "test"))
        do {
            try await missing.start(refresh: 3600)
            XCTFail("a missing key set started")
        } catch {
            XCTAssertTrue("\(error)".contains("--jwks"), "\(error)")
        }
        try Data(#"{"keys":[]}"#.utf8).write(to: self.keySetFile)
        do {
            try await self.verifier().stop()
            XCTFail("an empty key set started")
        } catch {
            XCTAssertTrue("\(error)".contains("no signing key"), "\(error)")
        }
    }
}
