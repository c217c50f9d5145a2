import Foundation
import NIOCore
import NIOHTTP1

/// The HTTP face of sessions, for producers that are not WebSocket clients:
/// `POST /sessions/{id}/events` appends (a JSON object or an array of them) and returns the seqs,
/// `GET /sessions/{id}/events?after=N` returns the history held, `GET /sessions/{id}` the status.
struct SessionsAPI {
    let store: SessionStore
    /// When set, appending requires `Authorization: Bearer <token>`.
    let token: String?

    private static let eventsPattern = PathPattern("/sessions/:id/events")
    private static let statusPattern = PathPattern("/sessions/:id")

    /// The reply, or nil if the path is not part of this API. `body` is nil when it was too large.
    func handle(_ head: HTTPRequestHead, target: RequestTarget, body: ByteBuffer?, on loop: any EventLoop) -> HTTPReply? {
        if let id = Self.eventsPattern.match(target.path)?["id"] {
            switch head.method {
            case .POST: return self.append(to: id, head: head, body: body, on: loop)
            case .GET, .HEAD: return self.history(of: id, after: target.query["after"], on: loop)
            default: return .methodNotAllowed("GET, POST")
            }
        }
        if let id = Self.statusPattern.match(target.path)?["id"] {
            guard head.method == .GET || head.method == .HEAD else { return .methodNotAllowed("GET") }
            return .later(
                self.store.lookup(id, on: loop).map { session in
                    session.map { .json(.ok, $0.status.json) } ?? .error(.notFound, "no session \(id)")
                }.recover(Self.unavailable)
            )
        }
        return nil
    }

    private static func unavailable(_ error: any Error) -> HTTPReply {
        .error(.serviceUnavailable, "\(error)")
    }

    private func append(to id: String, head: HTTPRequestHead, body: ByteBuffer?, on loop: any EventLoop) -> HTTPReply {
        if let token = self.token {
            guard let presented = Self.bearerToken(head.headers), Self.constantTimeEquals(presented, token) else {
                var reply = HTTPReply.error(.unauthorized, "a valid bearer token is required to publish")
                reply.headers.add(name: "WWW-Authenticate", value: "Bearer")
                return reply
            }
        }
        guard let body else {
            return .error(.payloadTooLarge, "the body is larger than \(HTTPRequestHandler.maxBodySize) bytes")
        }
        // Events go to clients as text frames: one that is not UTF-8 would make each of them close
        // (1007) on every reconnect, so it is refused here, once.
        guard body.isValidUTF8 else {
            return .error(.badRequest, "the body is not valid UTF-8")
        }
        let events: [ByteBuffer]
        switch body.withUnsafeReadableBytes({ JSONEnvelope.scan($0) }) {
        case .invalid(let reason):
            return .error(.badRequest, "invalid JSON: \(reason)")
        case .object:
            events = [body]
        case .notAnObject:
            switch body.withUnsafeReadableBytes({ JSONEnvelope.arrayElements($0) }) {
            case .failure(let failure):
                return .error(.badRequest, "expected a JSON object or an array of objects: \(failure.description)")
            case .success(let ranges):
                events = ranges.map { body.getSlice(at: body.readerIndex + $0.lowerBound, length: $0.count)! }
            }
        }
        // Every event is checked before any is appended, so a refused batch appends nothing.
        var types: [String?] = []
        for (index, event) in events.enumerated() {
            switch SessionStore.eventType(of: event) {
            case .success(let type):
                types.append(type)
            case .failure(let problem):
                return .error(.badRequest, events.count > 1 ? "event \(index): \(problem)" : problem.description)
            }
        }
        let batch = zip(events, types).map { (text: $0, type: $1) }
        return .later(
            self.store.commit(into: id, events: batch, on: loop).map { outcome in
                let seqs = outcome.seqs.map(String.init).joined(separator: ",")
                guard let failure = outcome.failure else {
                    return .json(.created, #"{"session":\#(jsonString(id)),"epoch":"\#(outcome.epoch ?? "")","seqs":[\#(seqs)]}"#)
                }
                let status: HTTPResponseStatus =
                    switch failure {
                    case .closed: .conflict
                    case .invalid: .badRequest
                    case .unavailable: .serviceUnavailable
                    case .notDurable: .internalServerError
                    case .full: .insufficientStorage
                    }
                return .json(status, #"{"error":\#(jsonString(failure.description)),"seqs":[\#(seqs)]}"#)
            }
        )
    }

    private func history(of id: String, after: String?, on loop: any EventLoop) -> HTTPReply {
        let afterSeq: UInt64
        if let after {
            guard let value = UInt64(after) else { return .error(.badRequest, "'after' must be a whole number") }
            afterSeq = value
        } else {
            afterSeq = 0
        }
        return .later(
            self.store.lookup(id, on: loop).map { session in
                guard let session else { return .error(.notFound, "no session \(id)") }
                let status = session.status
                let held = session.events(after: afterSeq)
                var body = #"{"session":\#(jsonString(id)),"epoch":"\#(session.epoch)","state":"\#(status.state)","#
                body += #""last_seq":\#(held.lastSeq),"gap":\#(held.gap),"events":["#
                body += held.events.map { String(buffer: $0.text) }.joined(separator: ",")
                return .json(.ok, body + "]}")
            }.recover(Self.unavailable)
        )
    }

    private static func bearerToken(_ headers: HTTPHeaders) -> String? {
        guard let value = headers.first(name: "Authorization"), value.lowercased().hasPrefix("bearer ") else { return nil }
        return String(value.dropFirst("bearer ".count)).trimmingCharacters(in: .whitespaces)
    }

    /// Compares without an early exit, so timing does not reveal how much of a guess was right.
    static func constantTimeEquals(_ lhs: String, _ rhs: String) -> Bool {
        let left = Array(lhs.utf8)
        let right = Array(rhs.utf8)
        var difference = left.count ^ right.count
        for index in 0..<max(left.count, right.count) {
            let a = index < left.count ? left[index] : 0
            let b = index < right.count ? right[index] : 0
            difference |= Int(a ^ b)
        }
        return difference == 0
    }
}
