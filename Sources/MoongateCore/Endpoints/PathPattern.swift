import Foundation

/// An endpoint path such as `/ws/progress/:session`: literal segments and `:name` parameters.
public struct PathPattern: Sendable, Hashable, CustomStringConvertible {
    enum Segment: Sendable, Hashable {
        case literal(String)
        case parameter(String)
    }

    public let description: String
    let segments: [Segment]

    public init(_ pattern: String) {
        self.description = pattern
        self.segments = Self.split(pattern).map { part in
            part.hasPrefix(":") && part.count > 1 ? .parameter(String(part.dropFirst())) : .literal(String(part))
        }
    }

    /// The names of its `:name` parameters, in order.
    var parameterNames: [String] {
        self.segments.compactMap { segment in
            if case .parameter(let name) = segment { return name }
            return nil
        }
    }

    /// Patterns that match the same paths (`/a/:x` and `/a/:y`) share a shape.
    var shape: String {
        "/" + self.segments.map { segment in
            switch segment {
            case .literal(let text): return text
            case .parameter: return ":"
            }
        }.joined(separator: "/")
    }

    var literalCount: Int {
        self.segments.reduce(0) { count, segment in
            if case .literal = segment { return count + 1 }
            return count
        }
    }

    /// The parameters if `path` (without its query) matches, else nil.
    func match(_ path: Substring) -> [String: String]? {
        let parts = Self.split(path)
        guard parts.count == self.segments.count else { return nil }
        var parameters: [String: String] = [:]
        for (segment, part) in zip(self.segments, parts) {
            switch segment {
            case .literal(let text):
                guard text == part else { return nil }
            case .parameter(let name):
                guard !part.isEmpty else { return nil }
                parameters[name] = String(part).removingPercentEncoding ?? String(part)
            }
        }
        return parameters
    }

    private static func split<S: StringProtocol>(_ path: S) -> [S.SubSequence] {
        path.split(separator: "/", omittingEmptySubsequences: true)
    }
}

/// A request target split into its path and decoded query parameters.
struct RequestTarget: Sendable {
    let path: Substring
    let query: [String: String]

    init(uri: String) {
        let pathEnd = uri.firstIndex(where: { $0 == "?" || $0 == "#" }) ?? uri.endIndex
        self.path = uri[..<pathEnd]
        var query: [String: String] = [:]
        if pathEnd < uri.endIndex, uri[pathEnd] == "?" {
            let fragmentStart = uri[pathEnd...].firstIndex(of: "#") ?? uri.endIndex
            for pair in uri[uri.index(after: pathEnd)..<fragmentStart].split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let name = Self.decode(parts[0])
                guard !name.isEmpty else { continue }
                query[name] = parts.count > 1 ? Self.decode(parts[1]) : ""
            }
        }
        self.query = query
    }

    private static func decode(_ component: Substring) -> String {
        let spaced = component.replacingOccurrences(of: "+", with: " ")
        return spaced.removingPercentEncoding ?? spaced
    }
}
