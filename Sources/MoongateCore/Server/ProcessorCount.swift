import Foundation
import NIOCore

enum ProcessorCount {
    /// Cores this process may run on: NIO's count (cgroup quotas, cpusets) further limited by the
    /// CPU affinity mask, so `taskset -c 0 moongate` runs one I/O loop, not one per machine core.
    static var available: Int {
        guard let allowed = self.affinityCount else { return System.coreCount }
        return max(1, min(allowed, System.coreCount))
    }

    /// Bits set in `Cpus_allowed` of /proc/self/status (hex words separated by commas).
    private static var affinityCount: Int? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed:") })
        else { return nil }
        let mask = line.dropFirst("Cpus_allowed:".count).filter { $0.isHexDigit }
        let count = mask.reduce(0) { $0 + (Int(String($1), radix: 16) ?? 0).nonzeroBitCount }
        return count > 0 ? count : nil
    }
}
