import Foundation
import LuaBridge
import NIOConcurrencyHelpers

/// What the console lists besides the live figures: the latest reloads and script errors, newest
/// first, a bounded number of each.
final class HostActivity: Sendable {
    struct Reload: Sendable, Encodable {
        var at: Double
        var ok: Bool
        var summary: String
        var errors: [String]
    }

    struct ScriptFailure: Sendable, Encodable {
        var at: Double
        var script: String
        var line: Int?
        var kind: String
        var message: String
        var activity: String
        var endpoint: String?
    }

    static let kept = 20
    let startedAt = Date()
    private let state = NIOLockedValueBox((reloads: [Reload](), errors: [ScriptFailure](), errorCount: 0))

    func recordReload(ok: Bool, summary: String, errors: [ScriptError] = []) {
        let reload = Reload(at: Date().timeIntervalSince1970, ok: ok, summary: summary, errors: errors.map(\.description))
        self.state.withLockedValue { state in
            state.reloads.insert(reload, at: 0)
            state.reloads.removeLast(max(0, state.reloads.count - Self.kept))
        }
    }

    func recordError(_ error: ScriptError, while activity: String, endpoint: String?) {
        let failure = ScriptFailure(
            at: Date().timeIntervalSince1970,
            script: error.script,
            line: error.line,
            kind: error.kind.rawValue,
            message: error.message,
            activity: activity,
            endpoint: endpoint
        )
        self.state.withLockedValue { state in
            state.errors.insert(failure, at: 0)
            state.errors.removeLast(max(0, state.errors.count - Self.kept))
            state.errorCount += 1
        }
    }

    var recent: (reloads: [Reload], errors: [ScriptFailure], errorCount: Int) {
        self.state.withLockedValue { $0 }
    }
}
