/// What a reload changed: the endpoints by path.
public struct ReloadSummary: Sendable, Equatable, CustomStringConvertible {
    public var added: [String] = []
    public var changed: [String] = []
    public var removed: [String] = []
    public var unchanged: [String] = []
    public var milliseconds: Int = 0

    public var description: String {
        "\(self.added.count) added, \(self.changed.count) changed, \(self.removed.count) removed, "
            + "\(self.unchanged.count) unchanged in \(self.milliseconds) ms"
    }
}
