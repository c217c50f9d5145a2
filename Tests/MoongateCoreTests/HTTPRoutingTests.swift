import XCTest

/// What plain HTTP requests get, and which paths upgrade.
final class HTTPRoutingTests: HostTestCase {
    private static let script = """
        endpoint { path = "/ws/echo", on_text = function(conn, text) return text end }
        endpoint { path = "/ws/rooms/:room", initial = function(conn) return { room = conn.params.room } end }
        endpoint { path = "/ws/rooms/lobby", initial = { room = "the lobby" } }
        """

    func testUnknownPathIsRefusedWith404BeforeUpgrade() async throws {
        let host = try await self.startHost(["a.lua": Self.script])
        do {
            _ = try await host.connect("/nowhere")
            XCTFail("upgraded on an unknown path")
        } catch TestClientError.notUpgraded(let status) {
            XCTAssertEqual(status, 404)
        }
        // A known prefix is not a match either.
        do {
            _ = try await host.connect("/ws/echo/extra")
            XCTFail("upgraded on /ws/echo/extra")
        } catch TestClientError.notUpgraded(let status) {
            XCTAssertEqual(status, 404)
        }
        XCTAssertEqual(host.connectionCount, 0)
    }

    func testPlainGetHealthzIs200() async throws {
        let host = try await self.startHost(["a.lua": Self.script])
        let response = try await HTTPProbe.get(port: host.port, path: "/healthz")
        XCTAssertEqual(response.status, 200)
        XCTAssertEqual(response.body, "ok\n")
    }

    func testPlainGetOnAnEndpointIs426() async throws {
        let host = try await self.startHost(["a.lua": Self.script])
        let response = try await HTTPProbe.get(port: host.port, path: "/ws/echo")
        XCTAssertEqual(response.status, 426)
        XCTAssertEqual(response.headers["Upgrade"].first?.lowercased(), "websocket")

        let parameterised = try await HTTPProbe.get(port: host.port, path: "/ws/rooms/42?x=1")
        XCTAssertEqual(parameterised.status, 426)
    }

    func testPlainGetOnAnUnknownPathIs404() async throws {
        let host = try await self.startHost(["a.lua": Self.script])
        let response = try await HTTPProbe.get(port: host.port, path: "/nowhere")
        XCTAssertEqual(response.status, 404)
    }

    func testLiteralSegmentWinsOverParameter() async throws {
        let host = try await self.startHost(["a.lua": Self.script])
        let lobby = try await host.connect("/ws/rooms/lobby")
        let first = try await lobby.nextJSON()
        XCTAssertEqual(first["room"] as? String, "the lobby")

        let other = try await host.connect("/ws/rooms/kitchen")
        let second = try await other.nextJSON()
        XCTAssertEqual(second["room"] as? String, "kitchen")
    }
}
