import Foundation

/// What scripts may reach outside the host: `--allow-net`, `--http-max-body`, `--allow-exec`, the
/// databases (`--sqlite`, `--postgres`) and the token keys (`--jwks`). Nothing by default.
public struct OutboundPolicy: Sendable {
    /// `HOST`, `HOST:PORT`, or `*` for any host.
    public var allowedNet: [String]
    /// Largest response body `http.request` reads, in bytes.
    public var httpMaxBody: Int
    /// Extra certificate authorities HTTPS trusts, besides the system's (`--ca-file`).
    public var caFile: String?
    /// Absolute paths of the programs `exec` may run.
    public var allowedPrograms: [String]
    /// The databases `sql.query` and `sql.exec` reach by name.
    public var databases: [DatabaseSetting]
    /// A JWKS file or URL whose keys `jwt.verify` accepts (`--jwks`).
    public var jwks: String?
    /// Seconds between reloads of the JWKS (besides the reload on an unknown `kid`).
    public var jwksRefresh: Double

    public init(
        allowedNet: [String] = [],
        httpMaxBody: Int = 8 << 20,
        caFile: String? = nil,
        allowedPrograms: [String] = [],
        databases: [DatabaseSetting] = [],
        jwks: String? = nil,
        jwksRefresh: Double = 300
    ) {
        self.allowedNet = allowedNet
        self.httpMaxBody = httpMaxBody
        self.caFile = caFile
        self.allowedPrograms = allowedPrograms
        self.databases = databases
        self.jwks = jwks
        self.jwksRefresh = jwksRefresh
    }

    /// The allowed program `requested` names: its absolute path, or the last part of exactly one
    /// `--allow-exec` path (`git` for `/usr/bin/git`). Otherwise why it may not run.
    func program(_ requested: String) -> Result<String, ProgramRefusal> {
        let candidates: [String]
        if requested.hasPrefix("/") {
            var parts: [Substring] = []
            for part in requested.split(separator: "/") where part != "." {
                if part == ".." { _ = parts.popLast() } else { parts.append(part) }
            }
            let path = "/" + parts.joined(separator: "/")
            candidates = self.allowedPrograms.filter { $0 == path }
        } else if requested.contains("/") {
            candidates = []  // relative to what? Only absolute paths and bare names are read.
        } else {
            candidates = self.allowedPrograms.filter { $0.split(separator: "/").last.map(String.init) == requested }
        }
        guard candidates.count == 1 else {
            return .failure(
                ProgramRefusal(
                    description: "\(requested) is not allowed: start the host with --allow-exec /absolute/path/to/\(requested.split(separator: "/").last ?? "")"
                )
            )
        }
        return .success(candidates[0])
    }

    struct ProgramRefusal: Error, CustomStringConvertible {
        let description: String
    }

    /// A malformed `--allow-exec` entry, for the command line to refuse.
    public static func problem(withProgram path: String) -> String? {
        guard path.hasPrefix("/") else {
            return "--allow-exec \(path): give the program's absolute path (exec never searches PATH)"
        }
        guard FileManager.default.isExecutableFile(atPath: path) else {
            return "--allow-exec \(path): no executable file there"
        }
        return nil
    }

    /// Why `host:port` may not be reached, naming the flag that would allow it; nil if it may.
    func refusal(host: String, port: Int) -> String? {
        let host = Self.bare(host)
        for entry in self.allowedNet {
            if entry == "*" {
                return nil
            }
            let (allowedHost, allowedPort) = Self.split(entry)
            if allowedHost == host, allowedPort == nil || allowedPort == port {
                return nil
            }
        }
        let shown = host.contains(":") ? "[\(host)]" : host
        return "\(shown):\(port) is not allowed: start the host with --allow-net \(shown) (or --allow-net \(shown):\(port))"
    }

    /// A URL's host as the allowances spell it: lower case, an IPv6 address without the brackets
    /// URLs put around it (`[::1]` → `::1`).
    static func bare(_ host: String) -> String {
        let host = host.lowercased()
        guard host.hasPrefix("["), host.hasSuffix("]"), host.count >= 2 else { return host }
        return String(host.dropFirst().dropLast())
    }

    /// `example.com:8080` → ("example.com", 8080); `[::1]:80` → ("::1", 80); `example.com` → (…, nil).
    static func split(_ entry: String) -> (host: String, port: Int?) {
        let entry = entry.lowercased()
        if entry.hasPrefix("[") {
            let close = entry.firstIndex(of: "]") ?? entry.endIndex
            let host = String(entry[entry.index(after: entry.startIndex)..<close])
            let rest = entry[close...].dropFirst()
            return (host, rest.hasPrefix(":") ? Int(rest.dropFirst()) : nil)
        }
        let parts = entry.split(separator: ":", omittingEmptySubsequences: false)
        if parts.count == 2, let port = Int(parts[1]) {
            return (String(parts[0]), port)
        }
        return (entry, nil)
    }

    /// A malformed `--allow-net` entry, for the command line to refuse.
    public static func problem(withAllowance entry: String) -> String? {
        if entry == "*" { return nil }
        let (host, port) = Self.split(entry)
        if host.isEmpty || host.contains("/") || host.contains("*") {
            return "--allow-net \(entry): expected HOST, HOST:PORT or *"
        }
        if let port, !(1...65535).contains(port) {
            return "--allow-net \(entry): the port must be 1-65535"
        }
        if entry.contains(":"), port == nil, !host.contains(":") {
            return "--allow-net \(entry): expected HOST, HOST:PORT or *"
        }
        return nil
    }
}
