import Logging
import NIOCore

/// What the host lends every script: the connections, the endpoints, the I/O loops to write on.
struct HostServices: Sendable {
    let connections: ConnectionRegistry
    let endpoints: EndpointTable
    let sessions: SessionStore
    let metrics: HostMetrics
    let activity: HostActivity
    let ioLoops: [any EventLoop]
    /// One keep-alive timer per I/O loop for all of its connections.
    let keepAlive: KeepAliveWheels
    let originRefusals: OriginRefusals
    let limits: ScriptLimits
    let outbound: ScriptOutbound
    let logger: Logger

    /// For `moongate check`: scripts load and describe themselves, nothing is served.
    static func offline(limits: ScriptLimits, logger: Logger) -> HostServices {
        let metrics = HostMetrics()
        return HostServices(
            connections: ConnectionRegistry(),
            endpoints: EndpointTable(),
            sessions: SessionStore(),
            metrics: metrics,
            activity: HostActivity(),
            ioLoops: [],
            keepAlive: KeepAliveWheels(loops: []),
            originRefusals: OriginRefusals(metrics: metrics),
            limits: limits,
            outbound: ScriptOutbound(policy: limits.outbound, group: nil, logger: logger),
            logger: logger
        )
    }
}

/// A text or binary message from a client, complete (fragments already joined).
enum InboundMessage: Sendable {
    /// `id` is the raw JSON text of the message's top-level id, if it has one.
    case text(ByteBuffer, id: String?)
    case binary(ByteBuffer)
}
