/// A dashboard-like JSON snapshot for broadcast benchmarks: job records whose ids, states,
/// workers, progress and times vary as a real queue's do, so compression gains what it would on
/// real traffic (a run of padding compresses far better than anything real).
enum BenchSnapshot {
    private static let states = ["queued", "running", "succeeded", "failed", "retrying"]
    private static let stages = ["checkout", "build", "test", "package", "deploy", "verify"]

    /// `"items":[...]`, `size` bytes long (give or take a record's worth less).
    static func items(size: Int) -> String {
        var generator = SplitMix(seed: 0x6D6F_6F6E)
        var records: [String] = []
        var length = 10
        var n = 1040
        while true {
            n += Int(generator.next() % 7) + 1
            let record = [
                #"{"id":"job-\#(n)""#,
                #""state":"\#(states[Int(generator.next() % 5)])""#,
                #""stage":"\#(stages[Int(generator.next() % 6)])""#,
                #""worker":"w-\#(generator.next() % 24)""#,
                #""progress":\#(Double(generator.next() % 1000) / 1000)"#,
                #""attempt":\#(generator.next() % 3 + 1)"#,
                #""updated_at":"2026-12-06T\#(10 + generator.next() % 10):\#(10 + generator.next() % 50):\#(10 + generator.next() % 50)Z"}"#,
            ].joined(separator: ",")
            guard length + record.count + 1 <= size else { break }
            records.append(record)
            length += record.count + 1
        }
        return #""items":["# + records.joined(separator: ",") + "]"
    }

    /// A small deterministic generator, so every run sends the same snapshot.
    private struct SplitMix {
        var state: UInt64
        init(seed: UInt64) { self.state = seed }
        mutating func next() -> UInt64 {
            self.state &+= 0x9E37_79B9_7F4A_7C15
            var z = self.state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }
}
