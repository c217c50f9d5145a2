#if canImport(Glibc)
import Glibc
#endif

enum FileDescriptorLimit {
    /// Raises the soft limit on open files to the hard limit: every connection is a descriptor, and
    /// the usual soft default (1024) would cap a server, or a load client, far below its capacity.
    static func raiseToMaximum() {
        #if canImport(Glibc)
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        #endif
    }
}
