import NIOConcurrencyHelpers

/// The endpoints being served, by path pattern. Replaced as a whole on reload.
final class EndpointTable: Sendable {
    private let slots = NIOLockedValueBox<[EndpointSlot]>([])

    /// The slot serving `path` and its parameters. Literal segments win over parameters.
    func route(_ path: Substring) -> (slot: EndpointSlot, params: [String: String])? {
        let slots = self.slots.withLockedValue { $0 }
        var best: (slot: EndpointSlot, params: [String: String])?
        for slot in slots {
            guard let params = slot.pattern.match(path) else { continue }
            if let current = best, current.slot.pattern.literalCount >= slot.pattern.literalCount {
                continue
            }
            best = (slot, params)
        }
        return best
    }

    /// Where `publish(path, msg)` delivers: every client of the endpoint whose pattern is `path`,
    /// or else the clients connected to exactly `path` on endpoints that match it.
    func publishTargets(for path: String) -> [(slot: EndpointSlot, pathFilter: String?)] {
        let slots = self.slots.withLockedValue { $0 }
        if let exact = slots.first(where: { $0.pattern.description == path }) {
            return [(exact, nil)]
        }
        return slots.filter { $0.pattern.match(Substring(path)) != nil }.map { ($0, path) }
    }

    var all: [EndpointSlot] { self.slots.withLockedValue { $0 } }

    /// The largest `max_message_size` any endpoint declares, so the frame decoder admits what the
    /// most generous endpoint allows; each connection then enforces its own endpoint's limit.
    var largestMessageLimit: Int {
        self.slots.withLockedValue { slots in
            slots.compactMap { $0.binding?.spec.maxMessageSize }.max() ?? 0
        }
    }

    func replace(with slots: [EndpointSlot]) {
        self.slots.withLockedValue { $0 = slots }
    }
}
