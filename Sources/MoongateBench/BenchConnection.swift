import WebSocketClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// What one benchmark connection does once upgraded.
enum BenchRole {
    /// Holds the connection open, answering pings.
    case idle
    /// Keeps `window` `{"type":"event","id":N}` requests outstanding and times each ack.
    case ack(window: Int)
    /// Counts broadcasts and their latency from the `ts` they carry.
    case listener
    /// Sends a broadcast, waits for its own copy, sends the next (one outstanding).
    case sender(size: Int, snapshot: Bool)
    /// Waits for `expect` messages (a `ready` and a replay, say), then closes.
    case reconnect(expect: Int, done: EventLoopPromise<Void>)
}

/// Opens one WebSocket connection with NIO's client upgrader; the future completes once upgraded.
enum BenchConnection {
    static func open(
        _ target: WebSocketTarget,
        role: BenchRole,
        stats: BenchStats,
        group: any EventLoopGroup
    ) -> EventLoopFuture<any Channel> {
        WebSocketDial.open(target, on: group.next()) { upgraded in
            BenchConnectionHandler(role: role, stats: stats, upgraded: upgraded)
        }
    }
}

final class BenchConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let role: BenchRole
    private let stats: BenchStats
    private let upgraded: EventLoopPromise<Void>
    private var nextID = 0
    private var sentAt: [Int: UInt64] = [:]
    private var received = 0
    private var closedCleanly = false
    private var padding = ""

    init(role: BenchRole, stats: BenchStats, upgraded: EventLoopPromise<Void>) {
        self.role = role
        self.stats = stats
        self.upgraded = upgraded
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.upgraded.succeed()
        switch self.role {
        case .ack(let window):
            for _ in 0..<window { self.sendRequest(context: context) }
        case .sender(let size, let snapshot):
            self.padding = snapshot ? BenchSnapshot.items(size: max(0, size - 60)) : #""pad":""# + String(repeating: "x", count: max(0, size - 60)) + #"""#
            self.sendBroadcast(context: context)
        case .idle, .listener, .reconnect:
            break
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = self.unwrapInboundIn(data)
        switch frame.opcode {
        case .ping:
            context.writeAndFlush(self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.data)), promise: nil)
        case .text:
            self.received += 1
            self.handleText(frame.data, context: context)
        case .connectionClose:
            var data = frame.data
            let code = data.readInteger(as: UInt16.self).map(String.init) ?? "none"
            self.closedCleanly = true
            self.stats.update { $0.closes[code, default: 0] += 1 }
            context.close(promise: nil)
        default:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !self.closedCleanly {
            self.stats.update { $0.abnormal += 1 }
        }
        if case .reconnect(_, let done) = self.role {
            done.succeed()
        }
        context.fireChannelInactive()
    }

    /// Closes with 1000 (the runner's way of ending a connection).
    func closeNormally(context: ChannelHandlerContext) {
        self.closedCleanly = true
        var data = ByteBuffer()
        data.writeInteger(UInt16(1000))
        let loopBoundContext = context.loopBound
        context.writeAndFlush(self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: data)))
            .whenComplete { _ in loopBoundContext.value.close(promise: nil) }
    }

    private func handleText(_ text: ByteBuffer, context: ChannelHandlerContext) {
        let now = DispatchTime.now().uptimeNanoseconds
        let measuring = self.stats.isMeasuring
        switch self.role {
        case .idle:
            if measuring { self.stats.update { $0.messages += 1 } }
        case .ack:
            guard let id = Self.number(after: #""id":"#, in: text), let sent = self.sentAt.removeValue(forKey: id) else { return }
            if measuring {
                self.stats.update { $0.replies += 1 }
                self.stats.record(latency: Int64(now - sent))
            }
            self.sendRequest(context: context)
        case .listener:
            guard let ts = Self.number(after: #""ts":"#, in: text) else { return }
            if measuring {
                self.stats.update { $0.deliveries += 1 }
                self.stats.record(latency: Int64(now) - Int64(ts))
            }
        case .sender:
            guard Self.number(after: #""n":"#, in: text) == self.nextID else { return }
            if measuring { self.stats.update { $0.broadcasts += 1 } }
            self.sendBroadcast(context: context)
        case .reconnect(let expect, _):
            if self.received == expect {
                if measuring { self.stats.update { $0.reconnects += 1 } }
                self.closeNormally(context: context)
            }
        }
    }

    private func sendRequest(context: ChannelHandlerContext) {
        self.nextID += 1
        self.sentAt[self.nextID] = DispatchTime.now().uptimeNanoseconds
        self.send(#"{"type":"event","id":\#(self.nextID)}"#, context: context)
    }

    private func sendBroadcast(context: ChannelHandlerContext) {
        self.nextID += 1
        let ts = DispatchTime.now().uptimeNanoseconds
        self.send(#"{"type":"broadcast","ts":\#(ts),"n":\#(self.nextID),\#(self.padding)}"#, context: context)
    }

    private func send(_ text: String, context: ChannelHandlerContext) {
        let frame = WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: ByteBuffer(string: text))
        context.writeAndFlush(self.wrapOutboundOut(frame), promise: nil)
    }

    /// The integer right after `key` in `text` (the harness's messages are flat JSON).
    static func number(after key: String, in text: ByteBuffer) -> Int? {
        text.withUnsafeReadableBytes { bytes -> Int? in
            let needle = Array(key.utf8)
            guard bytes.count >= needle.count else { return nil }
            var index = 0
            while index + needle.count <= bytes.count {
                if bytes[index] == needle[0], zip(needle.indices, needle).allSatisfy({ bytes[index + $0.0] == $0.1 }) {
                    var value = 0
                    var cursor = index + needle.count
                    var digits = 0
                    while cursor < bytes.count, bytes[cursor] >= 48, bytes[cursor] <= 57 {
                        value = value * 10 + Int(bytes[cursor] - 48)
                        cursor += 1
                        digits += 1
                    }
                    return digits > 0 ? value : nil
                }
                index += 1
            }
            return nil
        }
    }
}

@available(*, unavailable)
extension BenchConnectionHandler: Sendable {}

