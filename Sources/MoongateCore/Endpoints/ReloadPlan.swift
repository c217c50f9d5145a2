/// What a reload does to the endpoints, decided before anything changes: which existing slot
/// each newly declared endpoint keeps (its clients, fan-out and history survive), which are
/// new, which slots go. Pure: slots and definitions are whatever identifies them (`EndpointSlot`
/// and `EndpointSpec` in the host), so the diff is tested alone.
struct ReloadPlan<Slot, Definition: Equatable> {
    /// An endpoint being served now.
    struct Current {
        let slot: Slot
        let pattern: PathPattern
        let definition: Definition?
        /// The source of the script serving it.
        let source: [UInt8]?
    }

    /// One endpoint the new scripts declare.
    struct Declared {
        let path: String
        let definition: Definition
        let source: [UInt8]
    }

    enum Placement {
        /// Served by an existing slot; `changed` when its definition or its script's source differs.
        case keep(Slot, changed: Bool)
        case add(PathPattern)
    }

    /// For each script file, for each of its endpoints in order, where it is served.
    private(set) var placements: [[Placement]] = []
    /// Slots no new endpoint keeps: their clients are closed with 1001.
    private(set) var removed: [Slot] = []
    private(set) var summary = ReloadSummary()

    /// `declared` holds each script file's endpoints, in load order.
    init(current: [Current], declared: [[Declared]]) {
        // Patterns that match the same paths (`/a/:x` and `/a/:y`) share a shape; the first
        // slot of a shape is the one a new endpoint may keep.
        var byShape: [String: (index: Int, current: Current)] = [:]
        for (index, endpoint) in current.enumerated() where byShape[endpoint.pattern.shape] == nil {
            byShape[endpoint.pattern.shape] = (index, endpoint)
        }
        var kept = Set<Int>()
        for file in declared {
            var placements: [Placement] = []
            for endpoint in file {
                let pattern = PathPattern(endpoint.path)
                if let existing = byShape[pattern.shape], existing.current.pattern == pattern {
                    let same = existing.current.definition == endpoint.definition && existing.current.source == endpoint.source
                    if same {
                        self.summary.unchanged.append(endpoint.path)
                    } else {
                        self.summary.changed.append(endpoint.path)
                    }
                    kept.insert(existing.index)
                    placements.append(.keep(existing.current.slot, changed: !same))
                } else {
                    self.summary.added.append(endpoint.path)
                    placements.append(.add(pattern))
                }
            }
            self.placements.append(placements)
        }
        for (index, endpoint) in current.enumerated() where !kept.contains(index) {
            self.removed.append(endpoint.slot)
            self.summary.removed.append(endpoint.pattern.description)
        }
    }
}
