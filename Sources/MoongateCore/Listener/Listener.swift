import NIOCore
import NIOPosix

/// Binds the host's sockets: the service listener (WebSocket endpoints, HTTP, sessions API) and
/// the optional admin listener; every accepted connection gets its pipeline from `ChildPipeline`.
struct Listener {
    let group: MultiThreadedEventLoopGroup
    let configuration: ServerConfiguration
    let pipeline: ChildPipeline

    func bindService() async throws -> any Channel {
        let pipeline = self.pipeline
        return try await ServerBootstrap(group: self.group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            // NIO keeps each channel's last receive buffer for reuse; an idle client should not
            // hold 2 KiB for it. The allocator still grows to 64 KiB under sustained reads.
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 65536))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try pipeline.configure(channel)
                }
            }
            .bind(host: self.configuration.host, port: self.configuration.port)
            .get()
    }

    func bindAdmin(port: Int) async throws -> any Channel {
        let pipeline = self.pipeline
        return try await ServerBootstrap(group: self.group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try pipeline.configureAdmin(channel)
                }
            }
            .bind(host: self.configuration.adminHost, port: port)
            .get()
    }
}
