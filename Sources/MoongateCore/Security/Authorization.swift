/// What an endpoint's `authorize(req)` hook sees of a handshake.
struct AuthorizationRequest: Sendable {
    let path: String
    let params: [String: String]
    let query: [String: String]
    let headers: [String: String]
    let remoteAddress: String?
}

/// What the hook decided. Errors and budget overruns deny; they never allow.
enum AuthorizationDecision: Sendable, Equatable {
    /// `auth` is the JSON of the table the hook returned, if any (`conn.user`, `conn.data.auth`).
    case allow(auth: String?)
    case deny(status: Int, reason: String)

    static func denied(status: Int?, reason: String?) -> AuthorizationDecision {
        let status = status.flatMap { (400...499).contains($0) ? $0 : nil } ?? 403
        return .deny(status: status, reason: reason ?? (status == 401 ? "authentication required" : "forbidden"))
    }
}
