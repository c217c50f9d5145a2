import XCTest

@testable import MoongateCore

/// The command line's outbound settings, read without opening anything.
final class OutboundSettingsTests: XCTestCase {
    func testDatabaseSettingsReadNameModeAndURL() throws {
        XCTAssertEqual(try DatabaseSetting.sqlite("app=/var/lib/app.db"), .sqlite(name: "app", path: "/var/lib/app.db", writable: false))
        XCTAssertEqual(try DatabaseSetting.sqlite("jobs=data/jobs.db:rw"), .sqlite(name: "jobs", path: "data/jobs.db", writable: true))
        XCTAssertEqual(
            try DatabaseSetting.postgres("main=postgres://app:pw@127.0.0.1:5432/app"),
            .postgres(name: "main", url: "postgres://app:pw@127.0.0.1:5432/app")
        )
        let refused: [(() throws -> DatabaseSetting, String)] = [
            ({ try DatabaseSetting.sqlite("app.db") }, "--sqlite app.db: expected NAME=PATH"),
            ({ try DatabaseSetting.sqlite("=x.db") }, "the name must be"),
            ({ try DatabaseSetting.sqlite("app=:rw") }, "no path"),
            ({ try DatabaseSetting.postgres("main=mysql://x/y") }, "--postgres main: not a postgres:// URL"),
            ({ try DatabaseSetting.postgres("main=postgres://app@host") }, "no database name"),
        ]
        for (setting, reason) in refused {
            XCTAssertThrowsError(try setting()) { error in
                XCTAssertTrue("\(error)".contains(reason), "\(error) lacks \(reason)")
            }
        }
    }

    func testExecRunsOnlyAllowedProgramsByPathOrByTheirName() {
        let policy = OutboundPolicy(allowedPrograms: ["/bin/cat", "/usr/bin/git"])
        XCTAssertEqual(try policy.program("/bin/cat").get(), "/bin/cat")
        XCTAssertEqual(try policy.program("/bin/../bin/cat").get(), "/bin/cat")
        XCTAssertEqual(try policy.program("git").get(), "/usr/bin/git")
        for refused in ["/bin/sh", "sh", "/usr/local/bin/git", "", "cat;id", "bin/cat"] {
            XCTAssertThrowsError(try policy.program(refused).get()) { error in
                XCTAssertTrue("\(error)".contains("--allow-exec"), "\(error)")
            }
        }
        let twins = OutboundPolicy(allowedPrograms: ["/usr/bin/python3", "/opt/bin/python3"])
        XCTAssertThrowsError(try twins.program("python3").get(), "a bare name must name exactly one allowed program")
        XCTAssertNotNil(OutboundPolicy.problem(withProgram: "bin/cat"))
        XCTAssertNotNil(OutboundPolicy.problem(withProgram: "/nonexistent/program"))
        XCTAssertNil(OutboundPolicy.problem(withProgram: "/bin/cat"))
    }

    func testTheAllowListNamesTheFlagThatWouldAllowAHost() {
        let policy = OutboundPolicy(allowedNet: ["api.example.com", "127.0.0.1:9000"])
        XCTAssertNil(policy.refusal(host: "API.example.com", port: 443))
        XCTAssertNil(policy.refusal(host: "127.0.0.1", port: 9000))
        XCTAssertEqual(
            policy.refusal(host: "127.0.0.1", port: 9001),
            "127.0.0.1:9001 is not allowed: start the host with --allow-net 127.0.0.1 (or --allow-net 127.0.0.1:9001)"
        )
        XCTAssertNil(OutboundPolicy(allowedNet: ["*"]).refusal(host: "anything.example", port: 1))
    }

    /// URLs bracket IPv6 hosts (`http://[::1]:8080/`), the allowances do not (`--allow-net [::1]:8080`).
    func testBracketedIPv6HostsMatchTheirAllowance() {
        let policy = OutboundPolicy(allowedNet: ["[::1]:9000", "[2001:db8::1]"])
        XCTAssertNil(policy.refusal(host: "[::1]", port: 9000))
        XCTAssertNil(policy.refusal(host: "::1", port: 9000))
        XCTAssertNil(policy.refusal(host: "[2001:DB8::1]", port: 443))
        XCTAssertEqual(
            policy.refusal(host: "[::1]", port: 9001),
            "[::1]:9001 is not allowed: start the host with --allow-net [::1] (or --allow-net [::1]:9001)"
        )
    }
}
