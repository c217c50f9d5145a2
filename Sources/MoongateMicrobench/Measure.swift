import Foundation

/// Runs `body` (which does `operations` operations) until at least half a second has passed, five
/// times, and reports the best round: the least disturbed by the rest of the machine.
struct Measure {
    let name: String
    let operations: Int

    func run(_ body: () -> Void) -> Result {
        body()  // warm-up
        var best = Double.infinity
        for _ in 0..<5 {
            var rounds = 0
            let start = DispatchTime.now().uptimeNanoseconds
            var elapsed: UInt64 = 0
            repeat {
                body()
                rounds += 1
                elapsed = DispatchTime.now().uptimeNanoseconds - start
            } while elapsed < 500_000_000
            best = min(best, Double(elapsed) / Double(rounds * self.operations))
        }
        return Result(name: self.name, nanosecondsPerOperation: best)
    }

    struct Result {
        let name: String
        let nanosecondsPerOperation: Double

        var line: String {
            let perSecond = 1e9 / self.nanosecondsPerOperation
            let name = self.name.padding(toLength: max(56, self.name.count), withPad: " ", startingAt: 0)
            return name + String(format: "%10.1f ns/op %14.0f op/s", self.nanosecondsPerOperation, perSecond)
        }

        var json: String {
            String(format: "\"%@\":%.1f", self.name, self.nanosecondsPerOperation)
        }
    }
}
