import Crypto
import Foundation

/// Verifies HS256 JSON Web Tokens (RFC 7519) with a shared secret: the signature (HMAC-SHA256 from
/// swift-crypto, compared in constant time), the algorithm (only HS256: `none` and the rest are
/// refused), and the `exp` and `nbf` claims. Returns the claims as JSON text.
struct JWTVerifier {
    /// The environment variable that holds the shared secret.
    static let secretVariable = "MOONGATE_JWT_SECRET"

    let secret: SymmetricKey
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    let leeway: Double

    init(secret: String, leeway: Double = 30) {
        self.secret = SymmetricKey(data: Data(secret.utf8))
        self.leeway = leeway
    }

    enum Failure: Error, Equatable, CustomStringConvertible {
        case malformed
        case unsupportedAlgorithm(String)
        case badSignature
        case expired
        case notYetValid

        var description: String {
            switch self {
            case .malformed: return "malformed token"
            case .unsupportedAlgorithm(let algorithm): return "unsupported algorithm \(algorithm)"
            case .badSignature: return "bad signature"
            case .expired: return "token expired"
            case .notYetValid: return "token not yet valid"
            }
        }
    }

    func verify(_ token: String, now: Date = Date()) -> Result<String, Failure> {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let headerData = Self.base64URLDecode(parts[0]),
            let payloadData = Self.base64URLDecode(parts[1]), let signature = Self.base64URLDecode(parts[2]),
            let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any],
            let claims = try? JSONSerialization.jsonObject(with: payloadData) as? [String: Any]
        else { return .failure(.malformed) }
        guard let algorithm = header["alg"] as? String, algorithm == "HS256" else {
            return .failure(.unsupportedAlgorithm((header["alg"] as? String) ?? "none"))
        }
        let signingInput = Data("\(parts[0]).\(parts[1])".utf8)
        guard HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: signingInput, using: self.secret) else {
            return .failure(.badSignature)
        }
        let time = now.timeIntervalSince1970
        if let expiry = (claims["exp"] as? NSNumber)?.doubleValue, time > expiry + self.leeway {
            return .failure(.expired)
        }
        if let notBefore = (claims["nbf"] as? NSNumber)?.doubleValue, time + self.leeway < notBefore {
            return .failure(.notYetValid)
        }
        return .success(String(decoding: payloadData, as: UTF8.self))
    }

    /// Signs `claims` (JSON object text) with the same secret.
    func sign(claims: String) -> String {
        let header = Self.base64URLEncode(Data(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        let payload = Self.base64URLEncode(Data(claims.utf8))
        let mac = HMAC<SHA256>.authenticationCode(for: Data("\(header).\(payload)".utf8), using: self.secret)
        return "\(header).\(payload).\(Self.base64URLEncode(Data(mac)))"
    }

    static func base64URLDecode(_ text: Substring) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        return Data(base64Encoded: base64)
    }

    static func base64URLEncode(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}
