import Logging
import PostgresNIO

/// The host's tables in the cluster database, under one PostgreSQL schema (`--cluster-schema`,
/// `moongate` by default) so that they can share a database. Migrations are numbered and applied
/// once each, in one transaction under an advisory lock: hosts that start together wait for one
/// another instead of racing.
struct ClusterSchema: Sendable {
    /// A schema name, checked to be a plain identifier: it is spliced into statements (quoted),
    /// where PostgreSQL cannot bind a parameter.
    let name: String

    struct Invalid: Error, CustomStringConvertible {
        let name: String
        var description: String {
            "--cluster-schema: '\(self.name)' is not a plain name (letters, digits and _, at most 40, not starting with a digit)"
        }
    }

    init(_ name: String) throws {
        let allowed = name.utf8.allSatisfy { byte in
            (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39) || byte == 0x5F
        }
        guard allowed, !name.isEmpty, name.utf8.count <= 40, !(name.utf8.first! >= 0x30 && name.utf8.first! <= 0x39) else {
            throw Invalid(name: name)
        }
        self.name = name
    }

    /// A table of this schema, quoted.
    func table(_ table: String) -> String { "\"\(self.name)\".\(table)" }

    /// The LISTEN/NOTIFY channel of this schema's hosts.
    var wakeChannel: String { "\(self.name)_wake" }

    /// Each entry is one version; append, never edit one that has shipped.
    private var migrations: [[String]] {
        [
            [
                """
                CREATE TABLE \(self.table("sessions")) (
                    id text PRIMARY KEY,
                    epoch text NOT NULL,
                    settings jsonb NOT NULL,
                    last_seq bigint NOT NULL DEFAULT 0,
                    closed_at timestamptz,
                    active_at timestamptz NOT NULL DEFAULT now()
                )
                """,
                """
                CREATE TABLE \(self.table("events")) (
                    session text NOT NULL,
                    seq bigint NOT NULL,
                    body text NOT NULL,
                    at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (session, seq)
                )
                """,
                """
                CREATE TABLE \(self.table("nodes")) (
                    id text PRIMARY KEY,
                    address text NOT NULL,
                    started_at timestamptz NOT NULL,
                    connections integer NOT NULL DEFAULT 0,
                    last_seen timestamptz NOT NULL
                )
                """,
            ],
            [
                """
                CREATE TABLE \(self.table("broadcasts")) (
                    id bigserial PRIMARY KEY,
                    path text NOT NULL,
                    body text NOT NULL,
                    at timestamptz NOT NULL DEFAULT now()
                )
                """,
                "CREATE INDEX ON \(self.table("events")) (at)",
                """
                CREATE TABLE \(self.table("snapshots")) (
                    path text PRIMARY KEY,
                    body text NOT NULL,
                    at timestamptz NOT NULL DEFAULT now()
                )
                """,
            ],
        ]
    }

    /// Creates the schema and applies the migrations it lacks; returns the versions applied now.
    @discardableResult
    func migrate(_ client: PostgresClient, logger: Logger) async throws -> [Int] {
        try await client.withTransaction(logger: logger) { connection in
            // Every host migrating this schema takes the same lock; it is released at commit.
            let lockKey = "moongate migrations \(self.name)"
            try await connection.query("SELECT pg_advisory_xact_lock(hashtext(\(lockKey)))", logger: logger)
            try await connection.query(PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \"\(self.name)\""), logger: logger)
            try await connection.query(
                PostgresQuery(
                    unsafeSQL: """
                        CREATE TABLE IF NOT EXISTS \(self.table("migrations")) (
                            version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now()
                        )
                        """
                ),
                logger: logger
            )
            let rows = try await connection.query(
                PostgresQuery(unsafeSQL: "SELECT coalesce(max(version), 0) FROM \(self.table("migrations"))"),
                logger: logger
            )
            var current = 0
            for try await version in rows.decode(Int.self) {
                current = version
            }
            var applied: [Int] = []
            for (index, statements) in self.migrations.enumerated() where index + 1 > current {
                for statement in statements {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                let version = index + 1
                try await connection.query(
                    PostgresQuery(unsafeSQL: "INSERT INTO \(self.table("migrations")) (version) VALUES (\(version))"),
                    logger: logger
                )
                applied.append(version)
            }
            return applied
        }
    }
}
