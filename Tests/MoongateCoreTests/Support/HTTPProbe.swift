import NIOCore
import NIOHTTP1
import NIOPosix

/// One plain HTTP/1.1 request without an upgrade, for the non-WebSocket answers of the host.
enum HTTPProbe {
    struct Response: Sendable {
        var status: Int
        var headers: HTTPHeaders
        var body: String
    }

    static func get(port: Int, path: String, method: HTTPMethod = .GET, timeout: Double = 5) async throws -> Response {
        try await withTimeout(timeout, "\(method) \(path)") {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(host: "127.0.0.1", port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(
                            wrappingChannelSynchronously: channel
                        )
                    }
                }
            return try await channel.executeThenClose { inbound, outbound in
                var headers = HTTPHeaders()
                headers.add(name: "Host", value: "127.0.0.1:\(port)")
                headers.add(name: "Content-Length", value: "0")
                try await outbound.write(.head(HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: headers)))
                // The server may answer and close as soon as it has the head (no body to wait for).
                try? await outbound.write(.end(nil))
                var response = Response(status: 0, headers: [:], body: "")
                for try await part in inbound {
                    switch part {
                    case .head(let head):
                        response.status = Int(head.status.code)
                        response.headers = head.headers
                    case .body(var buffer):
                        response.body += buffer.readString(length: buffer.readableBytes) ?? ""
                    case .end:
                        return response
                    }
                }
                return response
            }
        }
    }
}
