import NIOCore
import XCTest

@testable import MoongateCore

/// The origin rules alone, without sockets: same-origin, loopback hosts, explicit lists, and how
/// often a refusal is logged.
final class OriginPolicyTests: XCTestCase {
    private let loopbackHost = OriginPolicy(allowed: ["same-origin"], loopbackHost: true)
    private let publicHost = OriginPolicy(allowed: ["same-origin"], loopbackHost: false)

    func testALoopbackHostLetsInPagesFromEveryLoopbackOriginAndPort() {
        for origin in [
            "http://localhost:5173", "http://127.0.0.1:8000", "http://[::1]:3000", "https://localhost",
            "http://127.0.0.2:9000", "http://app.localhost:8080", "HTTP://LOCALHOST:1",
        ] {
            XCTAssertTrue(self.loopbackHost.allows(origin: origin, host: "127.0.0.1:8080", endpointOrigins: nil), origin)
        }
    }

    func testALoopbackHostStillRefusesEveryOtherOrigin() {
        for origin in [
            "https://evil.example", "http://127.0.0.1.evil.example", "http://localhost.evil.example:80",
            "http://192.168.1.20:5173", "http://10.0.0.1", "null", "file://", "chrome-extension://abc", "",
        ] {
            XCTAssertFalse(self.loopbackHost.allows(origin: origin, host: "127.0.0.1:8080", endpointOrigins: nil), origin)
        }
    }

    func testAHostOnOtherAddressesKeepsTheStrictDefault() {
        XCTAssertFalse(self.publicHost.allows(origin: "http://localhost:5173", host: "127.0.0.1:8080", endpointOrigins: nil))
        XCTAssertTrue(self.publicHost.allows(origin: "http://127.0.0.1:8080", host: "127.0.0.1:8080", endpointOrigins: nil))
        XCTAssertTrue(self.publicHost.allows(origin: nil, host: "127.0.0.1:8080", endpointOrigins: nil))
    }

    func testAnEndpointsOwnListIsTakenAsWrittenEvenOnLoopback() {
        let listed = ["https://partner.example"]
        XCTAssertTrue(self.loopbackHost.allows(origin: "https://partner.example", host: "127.0.0.1:8080", endpointOrigins: listed))
        XCTAssertFalse(self.loopbackHost.allows(origin: "http://localhost:5173", host: "127.0.0.1:8080", endpointOrigins: listed))
    }

    func testExplicitAllowedOriginsReplaceTheDefault() {
        let policy = OriginPolicy(allowed: ["https://app.example.com"], loopbackHost: true)
        XCTAssertTrue(policy.allows(origin: "https://app.example.com/", host: "127.0.0.1:8080", endpointOrigins: nil))
        XCTAssertFalse(policy.allows(origin: "http://localhost:5173", host: "127.0.0.1:8080", endpointOrigins: nil))
    }

    func testWhichBindHostsCountAsLoopback() {
        for host in ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]", "LOCALHOST"] {
            XCTAssertTrue(OriginPolicy.isLoopbackBindHost(host), host)
        }
        for host in ["0.0.0.0", "::", "192.168.1.20", "example.com", "", "10.0.0.1"] {
            XCTAssertFalse(OriginPolicy.isLoopbackBindHost(host), host)
        }
    }

    func testARefusedOriginIsLoggedAtMostOncePerMinuteAndCountsWhatWasLeftOut() {
        let refusals = OriginRefusals(metrics: HostMetrics())
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        XCTAssertEqual(refusals.shouldLog(origin: "https://a.example", now: start), 0)
        XCTAssertNil(refusals.shouldLog(origin: "https://a.example", now: start + .seconds(1)))
        XCTAssertNil(refusals.shouldLog(origin: "https://a.example", now: start + .seconds(59)))
        XCTAssertEqual(refusals.shouldLog(origin: "https://b.example", now: start + .seconds(59)), 0)
        XCTAssertEqual(refusals.shouldLog(origin: "https://a.example", now: start + .seconds(60)), 2)
        XCTAssertNil(refusals.shouldLog(origin: "https://a.example", now: start + .seconds(61)))
    }

    func testManyDistinctOriginsDoNotGrowTheRefusalLogWithoutBound() {
        let refusals = OriginRefusals(metrics: HostMetrics())
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        for n in 0..<(OriginRefusals.capacity * 3) {
            XCTAssertEqual(refusals.shouldLog(origin: "https://\(n).example", now: start), 0)
        }
        XCTAssertLessThanOrEqual(refusals.remembered, OriginRefusals.capacity)
    }
}
