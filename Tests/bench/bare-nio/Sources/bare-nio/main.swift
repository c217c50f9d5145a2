// A bare SwiftNIO server for the shared bench protocol (../shared/bench/peers/README.md), so that
// Moongate can be compared with plain NIO on the same harness. usage: bare-nio PORT
//
// One event loop. On connect: {"type":"hello"}. A message whose top-level "type" is "broadcast"
// is relayed unchanged to every client, the sender included: framed once, and the same bytes are
// written to each recipient below its frame encoder. Anything else is acked, with the raw text of
// its top-level "id" when it has one; replies are flushed once per read batch. A ping round every
// 20 s closes the clients that did not answer the previous one.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

enum Wire {
    static let hello = ByteBuffer(string: #"{"type":"hello"}"#)
    static let plainAck = ByteBuffer(string: #"{"type":"ack","received":true}"#)
    static let ackPrefix = ByteBuffer(string: #"{"type":"ack","received":true,"id":"#)
    /// An unmasked Ping with no payload, as it goes on the wire.
    static let ping = ByteBuffer(bytes: [0x89, 0x00])

    /// `payload` as one unmasked, final RFC 6455 text frame: header and payload in one buffer.
    static func textFrame(_ payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        let count = payload.readableBytes
        var frame = allocator.buffer(capacity: count + 10)
        frame.writeInteger(UInt8(0x81))
        if count < 126 {
            frame.writeInteger(UInt8(count))
        } else if count <= 0xFFFF {
            frame.writeInteger(UInt8(126))
            frame.writeInteger(UInt16(count))
        } else {
            frame.writeInteger(UInt8(127))
            frame.writeInteger(UInt64(count))
        }
        frame.writeImmutableBuffer(payload)
        return frame
    }
}

/// Just enough JSON: walks the members of a top-level object, byte by byte, for "type" and "id".
/// Not a validating parser; anything that is not an object of members yields nothing (plain ack).
struct Scan {
    var broadcast = false
    /// Where the raw text of the top-level "id" value is, as offsets into the scanned bytes.
    var id: Range<Int>?

    private static let quote = UInt8(ascii: "\"")

    init(_ p: UnsafeRawBufferPointer) {
        var i = Self.skipSpace(p, 0)
        guard i < p.count, p[i] == UInt8(ascii: "{") else { return }
        i += 1
        var sawType = false
        while true {
            i = Self.skipSpace(p, i)
            guard i < p.count, p[i] == Self.quote, let keyEnd = Self.stringEnd(p, i) else { return }
            let key = i + 1..<keyEnd - 1
            i = Self.skipSpace(p, keyEnd)
            guard i < p.count, p[i] == UInt8(ascii: ":") else { return }
            let value = Self.skipSpace(p, i + 1)
            guard let valueEnd = Self.valueEnd(p, value), valueEnd > value else { return }
            if Self.equals(p, key, "type") {
                sawType = true
                self.broadcast = Self.equals(p, value..<valueEnd, #""broadcast""#)
                if self.broadcast { return }
            } else if Self.equals(p, key, "id") {
                self.id = value..<valueEnd
            }
            if sawType && self.id != nil { return }
            i = Self.skipSpace(p, valueEnd)
            guard i < p.count, p[i] == UInt8(ascii: ",") else { return }
            i += 1
        }
    }

    private static func equals(_ p: UnsafeRawBufferPointer, _ range: Range<Int>, _ s: StaticString) -> Bool {
        guard range.count == s.utf8CodeUnitCount else { return false }
        for k in 0..<range.count where p[range.lowerBound + k] != s.utf8Start[k] {
            return false
        }
        return true
    }

    private static func skipSpace(_ p: UnsafeRawBufferPointer, _ start: Int) -> Int {
        var i = start
        while i < p.count, p[i] == 0x20 || p[i] == 0x09 || p[i] == 0x0A || p[i] == 0x0D {
            i += 1
        }
        return i
    }

    /// `start` is at an opening quote: the index just past the closing one.
    private static func stringEnd(_ p: UnsafeRawBufferPointer, _ start: Int) -> Int? {
        var i = start + 1
        while i < p.count {
            switch p[i] {
            case UInt8(ascii: "\\"): i += 2
            case quote: return i + 1
            default: i += 1
            }
        }
        return nil
    }

    /// The end of the value that starts at `start`: a string, an object or array (brackets
    /// counted, strings skipped), or a scalar up to the next separator.
    private static func valueEnd(_ p: UnsafeRawBufferPointer, _ start: Int) -> Int? {
        var i = start
        var depth = 0
        while i < p.count {
            switch p[i] {
            case quote:
                guard let end = stringEnd(p, i) else { return nil }
                if depth == 0 { return end }
                i = end
                continue
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                if depth == 0 { return i }
                depth -= 1
                if depth == 0 { return i + 1 }
            case UInt8(ascii: ","), 0x20, 0x09, 0x0A, 0x0D:
                if depth == 0 { return i }
            default:
                break
            }
            i += 1
        }
        return depth == 0 ? i : nil
    }
}

/// Every connected client. Confined to the one event loop.
final class Hub {
    private var peers: [Peer] = []
    private let allocator = ByteBufferAllocator()

    func add(_ peer: Peer) {
        peer.slot = self.peers.count
        self.peers.append(peer)
    }

    func remove(_ peer: Peer) {
        guard peer.slot >= 0 else { return }
        let last = self.peers.removeLast()
        if last !== peer {
            self.peers[peer.slot] = last
            last.slot = peer.slot
        }
        peer.slot = -1
    }

    /// Frames `payload` once and writes those bytes to every client below its frame encoder.
    func broadcast(_ payload: ByteBuffer) {
        let frame = NIOAny(Wire.textFrame(payload, allocator: self.allocator))
        for peer in self.peers {
            peer.encoder?.writeAndFlush(frame, promise: nil)
        }
    }

    /// Closes the clients that did not answer the previous ping, and pings the others.
    func heartbeat() {
        let ping = NIOAny(Wire.ping)
        for peer in self.peers {
            if peer.answeredPing {
                peer.answeredPing = false
                peer.encoder?.writeAndFlush(ping, promise: nil)
            } else {
                peer.encoder?.close(promise: nil)
            }
        }
    }
}

final class Peer: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let hub: Hub
    /// The frame encoder's context: bytes written there go to the socket as they are.
    fileprivate private(set) var encoder: ChannelHandlerContext?
    fileprivate var slot = -1
    fileprivate var answeredPing = true
    /// A fragmented message so far.
    private var partial: ByteBuffer?
    private var needsFlush = false
    private var closing = false

    init(hub: Hub, encoder: ChannelHandlerContext) {
        self.hub = hub
        self.encoder = encoder
    }

    func handlerAdded(context: ChannelHandlerContext) {
        // Hello first, then join: no broadcast can overtake it.
        context.writeAndFlush(self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, data: Wire.hello)), promise: nil)
        self.hub.add(self)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.hub.remove(self)
        self.encoder = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.hub.remove(self)
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = self.unwrapInboundIn(data)
        guard !self.closing else { return }
        switch frame.opcode {
        case .text, .binary:
            if frame.fin {
                self.handle(frame.unmaskedData, context: context)
            } else {
                self.partial = frame.unmaskedData
            }
        case .continuation:
            guard var message = self.partial else { return }
            self.partial = nil
            var part = frame.unmaskedData
            message.writeBuffer(&part)
            if frame.fin {
                self.handle(message, context: context)
            } else {
                self.partial = message
            }
        case .ping:
            context.write(self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
            self.needsFlush = true
        case .pong:
            self.answeredPing = true
        case .connectionClose:
            self.closing = true
            var data = frame.unmaskedData
            let code = data.readSlice(length: 2) ?? ByteBuffer()
            context.writeAndFlush(self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: code)))
                .assumeIsolated()
                .whenComplete { _ in context.close(promise: nil) }
        default:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if self.needsFlush {
            self.needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func handle(_ message: ByteBuffer, context: ChannelHandlerContext) {
        let scan = message.withUnsafeReadableBytes { Scan($0) }
        if scan.broadcast {
            self.hub.broadcast(message)
            return
        }
        var reply = Wire.plainAck
        if let id = scan.id {
            reply = context.channel.allocator.buffer(capacity: Wire.ackPrefix.readableBytes + id.count + 1)
            reply.writeImmutableBuffer(Wire.ackPrefix)
            reply.writeImmutableBuffer(message.getSlice(at: message.readerIndex + id.lowerBound, length: id.count)!)
            reply.writeInteger(UInt8(ascii: "}"))
        }
        context.write(self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, data: reply)), promise: nil)
        self.needsFlush = true
    }
}

func serve(port: Int) throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let loop = group.next()
    let hub = try loop.submit { NIOLoopBound(Hub(), eventLoop: loop) }.wait()
    _ = loop.scheduleRepeatedTask(initialDelay: .seconds(20), delay: .seconds(20)) { _ in
        hub.value.heartbeat()
    }
    let upgrader = NIOWebSocketServerUpgrader(
        maxFrameSize: 1 << 24,
        shouldUpgrade: { channel, _ in channel.eventLoop.makeSucceededFuture(HTTPHeaders()) },
        upgradePipelineHandler: { channel, _ in
            channel.eventLoop.makeCompletedFuture {
                let encoder = try channel.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)
                try channel.pipeline.syncOperations.addHandler(Peer(hub: hub.value, encoder: encoder))
            }
        }
    )
    let server = try ServerBootstrap(group: group)
        .serverChannelOption(.backlog, value: 1024)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                    withServerUpgrade: (upgraders: [upgrader], completionHandler: { _ in })
                )
            }
        }
        .bind(host: "127.0.0.1", port: port)
        .wait()
    try server.closeFuture.wait()
}

let arguments = CommandLine.arguments
guard arguments.count == 2, let port = Int(arguments[1]) else {
    let usage = Array("usage: bare-nio PORT\n".utf8)
    _ = usage.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(2)
}
try serve(port: port)
