import Foundation
import NIOCore
import XCTest

@testable import MoongateCore

/// The cluster's socket-free parts: reading `--cluster` URLs and schema names, packing wake-ups
/// (session wake-ups and broadcasts) into NOTIFY payloads, and a session copy taking in what a pull brought.
final class ClusterPieceTests: XCTestCase {
    func testURLsAsLibpqReadsThem() throws {
        let tcp = try PostgresURL("postgres://app:s%40cret@db.example.com:6543/events?sslmode=require")
        XCTAssertEqual(tcp.username, "app")
        XCTAssertEqual(tcp.password, "s@cret")
        XCTAssertEqual(tcp.database, "events")
        XCTAssertEqual(tcp.sslMode, "require")
        XCTAssertEqual(tcp.description, "app@db.example.com:6543/events")
        guard case .tcp(let host, let port) = tcp.endpoint else { return XCTFail("not TCP: \(tcp.endpoint)") }
        XCTAssertEqual(host, "db.example.com")
        XCTAssertEqual(port, 6543)

        let defaults = try PostgresURL("postgresql://app@localhost/events")
        XCTAssertEqual(defaults.sslMode, "prefer")
        XCTAssertNil(defaults.password)
        guard case .tcp(_, 5432) = defaults.endpoint else { return XCTFail("default port: \(defaults.endpoint)") }

        let encodedSocket = try PostgresURL("postgres://app:pw@%2Fvar%2Frun%2Fpostgresql:5433/events")
        guard case .socket(let path) = encodedSocket.endpoint else { return XCTFail("not a socket: \(encodedSocket.endpoint)") }
        XCTAssertEqual(path, "/var/run/postgresql/.s.PGSQL.5433")

        let querySocket = try PostgresURL("postgres:///events?host=/tmp/pg&user=app")
        guard case .socket(let queryPath) = querySocket.endpoint else { return XCTFail("not a socket: \(querySocket.endpoint)") }
        XCTAssertEqual(queryPath, "/tmp/pg/.s.PGSQL.5432")
        XCTAssertEqual(querySocket.username, "app")
    }

    func testBadURLsSayWhatIsMissing() {
        let cases = [
            ("mysql://app@host/db", "not a postgres:// URL"),
            ("postgres://host/db", "no user name"),
            ("postgres://app@host", "no database name"),
            ("postgres://app@host:99999/db", "port 99999 is out of range"),
            ("postgres://app@host/db?sslmode=sometimes", "unknown sslmode 'sometimes'"),
        ]
        for (url, reason) in cases {
            XCTAssertThrowsError(try PostgresURL(url), url) { error in
                XCTAssertTrue("\(error)".contains(reason), "\(url): \(error)")
                XCTAssertTrue("\(error)".contains("postgres://USER:PASSWORD@HOST:PORT/DATABASE"))
            }
        }
    }

    func testSchemaNamesArePlainIdentifiers() throws {
        XCTAssertEqual(try ClusterSchema("moongate_2").table("events"), "\"moongate_2\".events")
        XCTAssertEqual(try ClusterSchema("moongate").wakeChannel, "moongate_wake")
        for bad in ["", "Upper", "9lives", "a-b", "x\"; DROP TABLE y", String(repeating: "a", count: 41)] {
            XCTAssertThrowsError(try ClusterSchema(bad), bad)
        }
    }

    func testNotificationsArePackedWithinThePayloadLimitBroadcastsInOrder() throws {
        var items: [ClusterBus.Item] = []
        for n in 0..<600 {
            items.append(.session("session-\(n % 200)"))
            items.append(.broadcast(path: "/feed", text: #"{"n":\#(n)}"#, snapshot: false))
        }
        let payloads = ClusterBus.payloads(items, from: "me")
        XCTAssertGreaterThan(payloads.count, 1)
        var sessions: [String] = []
        var broadcasts: [String] = []
        for payload in payloads {
            XCTAssertLessThanOrEqual(payload.utf8.count, ClusterBus.payloadLimit)
            let decoded = try JSONDecoder().decode(ClusterBus.Payload.self, from: Data(payload.utf8))
            XCTAssertEqual(decoded.from, "me")
            sessions += decoded.sessions ?? []
            broadcasts += (decoded.broadcasts ?? []).compactMap(\.text)
        }
        XCTAssertEqual(sessions, items.compactMap { if case .session(let id) = $0 { id } else { nil } })
        XCTAssertEqual(broadcasts, (0..<600).map { #"{"n":\#($0)}"# })
    }

    func testWhatDoesNotFitIsSentAnotherWay() throws {
        let huge = String(repeating: "x", count: ClusterBus.payloadLimit)
        let items: [ClusterBus.Item] = [
            .session(huge), .broadcast(path: "/a", text: huge, snapshot: false), .broadcast(path: "/b", text: huge, snapshot: true), .broadcast(path: "/c", text: "small", snapshot: false),
        ]
        // The first large broadcast was stored as row 7; the second could not be stored.
        let payloads = ClusterBus.payloads(items, from: "me", stored: [1: 7])
        XCTAssertEqual(payloads.count, 1)
        let decoded = try JSONDecoder().decode(ClusterBus.Payload.self, from: Data(payloads[0].utf8))
        XCTAssertEqual(decoded.everySession, true)
        XCTAssertNil(decoded.sessions)
        XCTAssertEqual(decoded.broadcasts, [ClusterBus.Relayed(path: "/a", stored: 7), ClusterBus.Relayed(path: "/c", text: "small")])
    }

    private func pulled(_ seqs: ClosedRange<UInt64>?, lastSeq: UInt64, closed: Bool = false) -> ClusterLog.Pulled {
        let now = Date().timeIntervalSince1970
        let events = (seqs.map(Array.init) ?? []).map { RestoredEvent(seq: $0, body: #"{"seq":\#($0)}"#, at: now) }
        return ClusterLog.Pulled(epoch: "e", lastSeq: lastSeq, closedAt: closed ? now : nil, events: events)
    }

    func testACopyTakesInPullsInOrderWhateverTheyOverlap() {
        var settings = SessionSettings()
        settings.history = 5
        let session = Session(
            restoring: RestoredSession(id: "s", epoch: "e", settings: settings, lastSeq: 0, closedAt: nil, events: []),
            journal: nil
        )
        _ = session.absorb(self.pulled(1...3, lastSeq: 3))
        // A pull that started earlier and ends later brings what is held again: nothing doubles.
        _ = session.absorb(self.pulled(2...4, lastSeq: 4))
        XCTAssertEqual(session.events(after: 0).events.map(\.seq), [1, 2, 3, 4])
        // The copy keeps the endpoint's bounds, as the log does.
        _ = session.absorb(self.pulled(5...8, lastSeq: 8))
        XCTAssertEqual(session.events(after: 0).events.map(\.seq), [4, 5, 6, 7, 8])
        XCTAssertTrue(session.events(after: 0).gap)
        // Events the log dropped before this copy saw them: the copy stays contiguous.
        _ = session.absorb(self.pulled(20...21, lastSeq: 21))
        XCTAssertEqual(session.events(after: 0).events.map(\.seq), [20, 21])
        // Nothing left in the log past a seq: the copy knows the last seq, holds nothing.
        _ = session.absorb(self.pulled(nil, lastSeq: 30, closed: true))
        XCTAssertEqual(session.lastSeq, 30)
        XCTAssertTrue(session.events(after: 21).events.isEmpty)
        XCTAssertTrue(session.isClosed)
    }

    func testOwnCommitsAreTakenInOnlyWhenTheyAreTheNextSeq() {
        let session = Session(
            restoring: RestoredSession(id: "s", epoch: "e", settings: SessionSettings(), lastSeq: 4, closedAt: nil, events: []),
            journal: nil
        )
        XCTAssertNil(session.absorbIfNext(seq: 6, text: ByteBuffer(string: "{}"), closed: false), "5 came from another host: a pull brings both")
        XCTAssertNotNil(session.absorbIfNext(seq: 5, text: ByteBuffer(string: #"{"type":"done"}"#), closed: true))
        XCTAssertEqual(session.events(after: 4).events.map { String(buffer: $0.text) }, [#"{"seq":5,"type":"done"}"#])
        XCTAssertTrue(session.isClosed)
    }

    func testOnePullAtATimeAndOneMoreIfAskedMeanwhile() {
        let session = Session(id: "s", settings: SessionSettings())
        XCTAssertTrue(session.beginPull())
        XCTAssertFalse(session.beginPull())
        XCTAssertFalse(session.beginPull())
        XCTAssertTrue(session.endPull(more: false), "asked for during the pull: one more")
        XCTAssertFalse(session.endPull(more: false))
        XCTAssertTrue(session.beginPull())
        XCTAssertTrue(session.endPull(more: true), "a full page: pull the next")
        XCTAssertFalse(session.endPull(more: false))
    }
}
