import Foundation
import XCTest

@testable import MoongateCore

final class JWTVerifierTests: XCTestCase {
    private let verifier = JWTVerifier(secret: "secret", leeway: 0)

    func testASignedTokenVerifiesToItsClaims() throws {
        let token = self.verifier.sign(claims: #"{"sub":"ada","exp":4102444800}"#)
        XCTAssertEqual(try self.verifier.verify(token).get(), #"{"sub":"ada","exp":4102444800}"#)
    }

    func testExpiredAndNotYetValidTokensAreRefused() {
        let now = Date(timeIntervalSince1970: 1_000_000)
        XCTAssertEqual(self.verifier.verify(self.verifier.sign(claims: #"{"exp":999999}"#), now: now), .failure(.expired))
        XCTAssertEqual(self.verifier.verify(self.verifier.sign(claims: #"{"nbf":1000001}"#), now: now), .failure(.notYetValid))
    }

    func testTamperedForeignAndMalformedTokensAreRefused() {
        let parts = self.verifier.sign(claims: #"{"sub":"ada"}"#).split(separator: ".")
        let forged = JWTVerifier.base64URLEncode(Data(#"{"sub":"eve"}"#.utf8))
        XCTAssertEqual(self.verifier.verify("\(parts[0]).\(forged).\(parts[2])"), .failure(.badSignature))
        XCTAssertEqual(JWTVerifier(secret: "other").verify(parts.joined(separator: ".")), .failure(.badSignature))
        let none = JWTVerifier.base64URLEncode(Data(#"{"alg":"none"}"#.utf8))
        XCTAssertEqual(self.verifier.verify("\(none).\(parts[1]).\(parts[2])"), .failure(.unsupportedAlgorithm("none")))
        XCTAssertEqual(self.verifier.verify("a.b"), .failure(.malformed))
    }
}
