import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A dedicated single-threaded event loop per script file, never one that does socket I/O. A file
/// keeps its loop across reloads, so its old and new versions run in one order.
final class ScriptLoops: Sendable {
    private let groups = NIOLockedValueBox<[String: MultiThreadedEventLoopGroup]>([:])

    func loop(for file: ScriptFile) -> any EventLoop {
        self.groups.withLockedValue { groups in
            if let group = groups[file.path] {
                return group.next()
            }
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            groups[file.path] = group
            return group.next()
        }
    }

    /// Shuts down the loops of files that are no longer served.
    func release(keeping paths: Set<String>) async {
        let unused = self.groups.withLockedValue { groups in
            let unused = groups.filter { !paths.contains($0.key) }
            for path in unused.keys {
                groups[path] = nil
            }
            return Array(unused.values)
        }
        for group in unused {
            try? await group.shutdownGracefully()
        }
    }
}
