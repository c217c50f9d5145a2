#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// The host's secrets from its environment: read once, at start, and then removed from the
/// process environment, so that scripts (`env`, `os.getenv`) and the programs they may run see
/// none of them. The value bytes are overwritten too, because `/proc/PID/environ` shows the
/// environment as it was placed at exec, whatever `unsetenv` did since.
public enum ProcessSecrets {
    public static let sessionToken = "MOONGATE_SESSION_TOKEN"
    public static let jwtSecret = "MOONGATE_JWT_SECRET"
    /// The cluster's PostgreSQL URL carries its password.
    public static let cluster = "MOONGATE_CLUSTER"
    public static let names = [sessionToken, jwtSecret, cluster]

    private static let values: [String: String] = {
        var values: [String: String] = [:]
        for name in names {
            guard let pointer = getenv(name) else { continue }
            values[name] = String(cString: pointer)
            unsetenv(name)
            memset(pointer, 0, strlen(pointer))
        }
        return values
    }()

    /// Takes the secrets out of the environment; call before anything else reads it.
    public static func scrub() {
        _ = self.values
    }

    /// A secret as the environment held it at start.
    public static func value(_ name: String) -> String? {
        self.values[name]
    }
}
