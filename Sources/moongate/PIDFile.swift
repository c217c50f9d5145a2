import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// `--pid-file`: this host's process id, for `kill -HUP $(cat FILE)`.
struct PIDFile {
    let path: String

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// Refuses a file that names another live process (a host already running: overwriting its
    /// file would point readers at the wrong one), then writes this one's id whole: a temporary
    /// file created exclusively (no link followed), renamed over the file.
    func write() throws(Failure) {
        if let other = Self.processID(in: self.path), other != getpid(), kill(other, 0) == 0 || errno == EPERM {
            throw Failure(description: "--pid-file \(self.path): process \(other), named there, is running (another host?); stop it or remove the file")
        }
        let temporary = self.path + ".\(getpid()).tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        guard descriptor >= 0 else { throw self.failure() }
        let text = Array("\(getpid())\n".utf8)
        let written = text.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
        close(descriptor)
        guard written == text.count, rename(temporary, self.path) == 0 else {
            let failure = self.failure()
            unlink(temporary)
            throw failure
        }
    }

    /// Removes the file if it still names this process (a second host that failed to start must
    /// not remove the running one's).
    func remove() {
        if Self.processID(in: self.path) == getpid() {
            unlink(self.path)
        }
    }

    private func failure() -> Failure {
        Failure(description: "--pid-file \(self.path): cannot write it (\(String(cString: strerror(errno))))")
    }

    private static func processID(in path: String) -> pid_t? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
