import XCTest

@testable import MoongateCore

/// The reload plan alone: which endpoints keep their slot (and so their clients), which are new,
/// which go, and what the summary says. Slots are names, definitions strings.
final class ReloadPlanTests: XCTestCase {
    private typealias Plan = ReloadPlan<String, String>

    private func current(_ slot: String, _ path: String, _ definition: String = "d", source: String = "s") -> Plan.Current {
        Plan.Current(slot: slot, pattern: PathPattern(path), definition: definition, source: Array(source.utf8))
    }

    private func declared(_ path: String, _ definition: String = "d", source: String = "s") -> Plan.Declared {
        Plan.Declared(path: path, definition: definition, source: Array(source.utf8))
    }

    private func kept(_ placement: Plan.Placement) -> (slot: String, changed: Bool)? {
        if case .keep(let slot, let changed) = placement { return (slot, changed) }
        return nil
    }

    func testFirstLoadAddsEverything() {
        let plan = Plan(current: [], declared: [[self.declared("/a"), self.declared("/b")], [self.declared("/c/:id")]])
        XCTAssertEqual(plan.summary.added, ["/a", "/b", "/c/:id"])
        XCTAssertEqual(plan.placements.map(\.count), [2, 1])
        XCTAssertTrue(plan.removed.isEmpty)
        guard case .add(let pattern) = plan.placements[1][0] else { return XCTFail("a new slot") }
        XCTAssertEqual(pattern, PathPattern("/c/:id"))
    }

    func testSameDefinitionAndSourceIsUnchangedAndKeepsItsSlot() {
        let plan = Plan(current: [self.current("slot-a", "/a")], declared: [[self.declared("/a")]])
        XCTAssertEqual(plan.summary.unchanged, ["/a"])
        XCTAssertEqual(self.kept(plan.placements[0][0])?.slot, "slot-a")
        XCTAssertEqual(self.kept(plan.placements[0][0])?.changed, false)
    }

    func testANewDefinitionOrANewSourceIsAChangeOnTheSameSlot() {
        let plan = Plan(
            current: [self.current("slot-a", "/a"), self.current("slot-b", "/b")],
            declared: [[self.declared("/a", "other"), self.declared("/b", source: "edited")]]
        )
        XCTAssertEqual(plan.summary.changed, ["/a", "/b"])
        XCTAssertEqual(plan.placements[0].compactMap { self.kept($0)?.slot }, ["slot-a", "slot-b"], "clients stay connected")
        XCTAssertTrue(plan.removed.isEmpty)
    }

    func testEndpointsNoScriptDeclaresAnyMoreAreRemoved() {
        let plan = Plan(current: [self.current("slot-a", "/a"), self.current("slot-b", "/b")], declared: [[self.declared("/a")]])
        XCTAssertEqual(plan.removed, ["slot-b"])
        XCTAssertEqual(plan.summary.removed, ["/b"])
    }

    func testAnEndpointMovedToAnotherFileKeepsItsSlot() {
        let plan = Plan(current: [self.current("slot-a", "/a", source: "one.lua")], declared: [[], [self.declared("/a", source: "two.lua")]])
        XCTAssertEqual(self.kept(plan.placements[1][0])?.slot, "slot-a")
        XCTAssertTrue(plan.removed.isEmpty)
    }

    func testRenamedParameterIsANewEndpointOnTheSamePaths() {
        // `/p/:id` and `/p/:session` match the same paths but hand scripts another name.
        let plan = Plan(current: [self.current("slot-p", "/p/:id")], declared: [[self.declared("/p/:session")]])
        XCTAssertEqual(plan.summary.added, ["/p/:session"])
        XCTAssertEqual(plan.removed, ["slot-p"])
    }

    func testParametersAndLiteralsAreDifferentShapes() {
        let plan = Plan(current: [self.current("slot-x", "/x/:id")], declared: [[self.declared("/x/all"), self.declared("/x/:id")]])
        XCTAssertEqual(plan.summary.added, ["/x/all"])
        XCTAssertEqual(plan.summary.unchanged, ["/x/:id"])
        XCTAssertEqual(self.kept(plan.placements[0][1])?.slot, "slot-x")
    }

    func testAnEndpointThatLostItsBindingIsAChange() {
        let orphan = Plan.Current(slot: "slot-a", pattern: PathPattern("/a"), definition: nil, source: nil)
        let plan = Plan(current: [orphan], declared: [[self.declared("/a")]])
        XCTAssertEqual(plan.summary.changed, ["/a"])
    }
}
