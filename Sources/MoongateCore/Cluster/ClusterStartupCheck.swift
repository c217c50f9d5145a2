import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresNIO

/// One connection made before anything else, so that a wrong URL, a refused connection, a wrong
/// password or a missing database stops the host with an error that names the problem.
enum ClusterStartupCheck {
    struct Failure: Error, CustomStringConvertible {
        let reason: String
        var description: String { "cluster: \(self.reason)" }
    }

    static func connect(_ url: PostgresURL, loop: any EventLoop, logger: Logger) async throws {
        do {
            let connection = try await PostgresConnection.connect(
                on: loop,
                configuration: try url.connectionConfiguration(),
                id: 0,
                logger: logger
            ).get()
            try await connection.close()
        } catch {
            throw Failure(reason: self.explain(error, url: url))
        }
    }

    /// What went wrong, in the words a user would look for.
    static func explain(_ error: any Error, url: PostgresURL) -> String {
        if let error = error as? PSQLError, let state = error.serverInfo?[.sqlState] {
            switch state {
            case "28P01":
                return "PostgreSQL at \(url) refused the password for user \(url.username)"
            case "28000":
                return "PostgreSQL at \(url) does not let user \(url.username) in: \(error.serverInfo?[.message] ?? "")"
            case "3D000":
                return "database \(url.database) does not exist at \(url) (create it first: createdb \(url.database))"
            default:
                break
            }
        }
        return "cannot connect to PostgreSQL at \(url): \(self.describe(error))"
    }

    /// A PostgreSQL error as one line: the server's message, or what the connection ran into.
    static func describe(_ error: any Error) -> String {
        guard let error = error as? PSQLError else { return "\(error)" }
        if let message = error.serverInfo?[.message] {
            return "\(message) (SQLSTATE \(error.serverInfo?[.sqlState] ?? "?"))"
        }
        if let underlying = error.underlying {
            return self.describeConnection(underlying)
        }
        return "\(error.code)"
    }

    private static func describeConnection(_ error: any Error) -> String {
        guard let error = error as? NIOConnectionError else { return "\(error)" }
        if error.dnsAError != nil || error.dnsAAAAError != nil, error.connectionErrors.isEmpty {
            return "host \(error.host) not found"
        }
        let reasons = error.connectionErrors.map { failure in
            (failure.error as? IOError).map { $0.errnoCode == ECONNREFUSED ? "connection refused" : "\($0)" } ?? "\(failure.error)"
        }
        return Set(reasons).sorted().joined(separator: "; ")
    }
}
