@testable import MoongateCore
import NIOCore
import XCTest

/// The host-wide bounds on sessions (`--sessions-max-bytes`, `--sessions-max-count`): past them an
/// append is refused and nothing is stored; a session's own eviction still makes room.
final class SessionBoundsTests: XCTestCase {
    private func event(_ padding: Int) -> ByteBuffer {
        ByteBuffer(string: #"{"type":"x","pad":""# + String(repeating: "p", count: padding) + #""}"#)
    }

    private func store(maxBytes: Int = 1 << 20, maxCount: Int = 100) -> SessionStore {
        let store = SessionStore()
        store.tally.limits = SessionTally.Limits(maxBytes: maxBytes, maxCount: maxCount)
        return store
    }

    func testAppendsPastTheHostsBytesAreRefusedAndNothingIsStored() throws {
        let store = self.store(maxBytes: 1000)
        XCTAssertNoThrow(try store.append(into: "a", object: self.event(400), type: "x").get())
        XCTAssertNoThrow(try store.append(into: "b", object: self.event(400), type: "x").get())
        let held = store.tally.bytes
        XCTAssertGreaterThan(held, 800)
        switch store.append(into: "a", object: self.event(400), type: "x") {
        case .success: XCTFail("appended past --sessions-max-bytes")
        case .failure(let error):
            guard case .full(let reason) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(reason.contains("--sessions-max-bytes"), reason)
        }
        XCTAssertEqual(store.existing("a")?.status.count, 1)
        XCTAssertEqual(store.tally.bytes, held)
        // A small one still fits.
        XCTAssertNoThrow(try store.append(into: "a", object: self.event(10), type: "x").get())
    }

    func testASessionsOwnEvictionMakesRoom() throws {
        let store = self.store(maxBytes: 1000)
        var settings = SessionSettings()
        settings.history = 2
        for _ in 0..<50 {
            XCTAssertNoThrow(try store.append(into: "rolling", object: self.event(300), type: "x", settings: settings).get())
        }
        let status = try XCTUnwrap(store.existing("rolling")?.status)
        XCTAssertEqual(status.count, 2)
        XCTAssertEqual(status.lastSeq, 50)
        XCTAssertEqual(store.tally.bytes, status.bytes)
    }

    func testSessionsPastTheHostsCountAreNotCreated() throws {
        let store = self.store(maxCount: 2)
        XCTAssertNoThrow(try store.append(into: "a", object: self.event(1), type: "x").get())
        XCTAssertNoThrow(try store.append(into: "b", object: self.event(1), type: "x").get())
        switch store.append(into: "c", object: self.event(1), type: "x") {
        case .success: XCTFail("created a session past --sessions-max-count")
        case .failure(let error):
            XCTAssertTrue(error.description.contains("--sessions-max-count"), error.description)
        }
        XCTAssertNil(store.existing("c"))
        XCTAssertNoThrow(try store.append(into: "a", object: self.event(1), type: "x").get())
    }

    func testTheSweepSettlesTheTally() throws {
        let store = self.store()
        var settings = SessionSettings()
        settings.retain = 0
        XCTAssertNoThrow(try store.append(into: "done", object: self.event(100), type: "complete", settings: settings).get())
        XCTAssertGreaterThan(store.tally.bytes, 100)
        store.sweep(now: .now() + .seconds(1))
        XCTAssertNil(store.existing("done"))
        XCTAssertEqual(store.tally.bytes, 0)
    }
}
