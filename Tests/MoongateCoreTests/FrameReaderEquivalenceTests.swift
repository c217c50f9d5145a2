import NIOCore
import NIOEmbedded
import NIOWebSocket
import XCTest

@testable import MoongateCore

/// `WebSocketFrameReader` decodes the common frame itself and leaves the rest to NIO's
/// `WebSocketFrameDecoder`; NIO's decoder alone is the reference. Both, each followed by the
/// validator (and the aggregator it adds) as on a connection, get the same byte streams (valid
/// and invalid frames of every kind, cut at random points) and must hand the connection the
/// same messages, in the same order, and the same error.
final class FrameReaderEquivalenceTests: XCTestCase {
    func testSameMessagesAndErrorsAsNIOsDecoder() throws {
        var random = SplitMix64(seed: 0x6d6f_6f6e_6761_7465)
        for round in 0..<2_000 {
            // Above, at and below the fast path's own limit.
            let maxFrameSize = [100, 1 << 14, 20_000][Int(random.next() % 3)]
            let stream = Self.stream(using: &random, maxFrameSize: maxFrameSize)
            let chunks = Self.cut(stream, using: &random)
            let deflate = random.next() % 4 == 0
            let expected = try Self.decodeWithNIO(chunks, maxFrameSize: maxFrameSize, deflate: deflate)
            let actual = try Self.decodeWithReader(chunks, maxFrameSize: maxFrameSize, deflate: deflate, keeps: random.next() % 2 == 0)
            guard expected == actual else {
                return XCTFail("round \(round), max frame \(maxFrameSize), deflate \(deflate), chunks \(chunks.map(\.count)):\nNIO:    \(expected)\nreader: \(actual)\nbytes: \(stream)")
            }
        }
    }

    func testTheCommonFrameTakesTheFastPath() throws {
        let recorder = Recorder(keeps: false)
        let channel = EmbeddedChannel(handlers: [WebSocketFrameReader(maxFrameSize: 1 << 14, sink: recorder), recorder])
        let frames = Self.frame(fin: true, opcode: 1, payload: Array("{\"type\":\"event\"}".utf8), mask: (1, 2, 3, 4))
            + Self.frame(fin: true, opcode: 2, payload: Array(repeating: 7, count: 300), mask: (5, 6, 7, 8))
        try channel.writeInbound(ByteBuffer(bytes: frames))
        XCTAssertEqual(recorder.fastMessages, 2)
        XCTAssertEqual(recorder.events, [
            .message(opcode: 1, payload: Array("{\"type\":\"event\"}".utf8)),
            .message(opcode: 2, payload: Array(repeating: 7, count: 300)),
        ])
    }

    /// A client streaming frames too large for the fast path, each read ending inside one: the
    /// reader holds at most about one frame, not everything it has read.
    func testBytesHeldBetweenReadsStayBounded() throws {
        let recorder = Recorder(keeps: false)
        let reader = WebSocketFrameReader(maxFrameSize: 1 << 20, sink: recorder)
        let channel = EmbeddedChannel(handlers: [reader, recorder])
        let frame = Self.frame(fin: true, opcode: 2, payload: Array(repeating: 1, count: 20_000), mask: (1, 2, 3, 4))
        let stream = Array(repeating: frame, count: 200).flatMap { $0 }
        var start = 0
        while start < stream.count {
            let end = min(stream.count, start + 7_001)
            try channel.writeInbound(ByteBuffer(bytes: stream[start..<end]))
            XCTAssertLessThan(reader.bufferedCapacity, 64 << 10)
            start = end
        }
        XCTAssertEqual(recorder.events.count, 200)
    }

    // MARK: Decoding

    enum Event: Equatable, CustomStringConvertible {
        /// A complete data message without reserved bits, unmasked: however it was decoded.
        case message(opcode: UInt8, payload: [UInt8])
        /// Anything else the validator let through (control frames, compressed messages inflated).
        case frame(fin: Bool, rsv: UInt8, opcode: UInt8, masked: Bool, payload: [UInt8])
        case error(String)

        var description: String {
            switch self {
            case .message(let opcode, let payload): "message(\(opcode), \(payload.count) B)"
            case .frame(let fin, let rsv, let opcode, let masked, let payload): "frame(fin \(fin), rsv \(rsv), op \(opcode), masked \(masked), \(payload.count) B)"
            case .error(let error): "error(\(error))"
            }
        }
    }

    final class Recorder: ChannelInboundHandler, UnfragmentedMessageSink {
        typealias InboundIn = WebSocketFrame
        var events: [Event] = []
        var fastMessages = 0
        let keeps: Bool

        init(keeps: Bool) { self.keeps = keeps }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard !self.failed else { return }
            let frame = self.unwrapInboundIn(data)
            let payload = Array(frame.unmaskedData.readableBytesView)
            let rsv: UInt8 = (frame.rsv1 ? 4 : 0) | (frame.rsv2 ? 2 : 0) | (frame.rsv3 ? 1 : 0)
            let opcode = UInt8(webSocketOpcode: frame.opcode)
            if frame.fin, rsv == 0, opcode == 1 || opcode == 2 {
                self.events.append(.message(opcode: opcode, payload: payload))
            } else {
                self.events.append(.frame(fin: frame.fin, rsv: rsv, opcode: opcode, masked: frame.maskKey != nil, payload: payload))
            }
        }

        /// As on a connection, where a failure has begun the close and data is no longer wanted.
        func receivedMessage(_ opcode: WebSocketOpcode, payload: ByteBuffer) -> Bool {
            guard !self.failed else { return false }
            self.fastMessages += 1
            self.events.append(.message(opcode: UInt8(webSocketOpcode: opcode), payload: Array(payload.readableBytesView)))
            return self.keeps
        }

        func readComplete() {}

        private var failed: Bool { self.events.last.map { if case .error = $0 { true } else { false } } ?? false }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            // NIO's handler reports later reads after an error as errors of their own; the first is the answer.
            if !self.failed { self.events.append(.error(String(describing: error))) }
        }
    }

    static func decodeWithNIO(_ chunks: [[UInt8]], maxFrameSize: Int, deflate: Bool) throws -> [Event] {
        let recorder = Recorder(keeps: false)
        let channel = EmbeddedChannel(handlers: [
            ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: maxFrameSize)),
            FrameValidator(maxMessageSize: maxFrameSize, deflate: deflate),
            recorder,
        ])
        for chunk in chunks { try channel.writeInbound(ByteBuffer(bytes: chunk)) }
        return recorder.events
    }

    static func decodeWithReader(_ chunks: [[UInt8]], maxFrameSize: Int, deflate: Bool, keeps: Bool) throws -> [Event] {
        let recorder = Recorder(keeps: keeps)
        let channel = EmbeddedChannel(handlers: [
            WebSocketFrameReader(maxFrameSize: maxFrameSize, sink: recorder),
            FrameValidator(maxMessageSize: maxFrameSize, deflate: deflate),
            recorder,
        ])
        for chunk in chunks { try channel.writeInbound(ByteBuffer(bytes: chunk)) }
        return recorder.events
    }

    // MARK: Streams

    /// One to twelve frames: mostly what clients send, plus every kind NIO's decoder must judge
    /// (unmasked, reserved bits and opcodes, fragments, long control frames, lengths at and past
    /// the limits, lengths in a longer encoding than needed), sometimes followed by garbage.
    static func stream(using random: inout SplitMix64, maxFrameSize: Int) -> [UInt8] {
        var bytes: [UInt8] = []
        for _ in 0..<(1 + random.next() % 12) {
            let roll = random.next() % 100
            let opcode: UInt8 = roll < 70 ? (roll % 2 == 0 ? 1 : 2) : [0, 0, 8, 9, 10, 3, 11][Int(random.next() % 7)]
            let fin = random.next() % 10 != 0
            let rsv: UInt8 = random.next() % 12 == 0 ? UInt8(random.next() % 8) : 0
            let masked = random.next() % 12 != 0
            let length: Int
            switch random.next() % 20 {
            case 0..<12: length = Int(random.next() % 126)
            case 12..<16: length = 126 + Int(random.next() % 400)
            case 16: length = WebSocketFrameReader<Recorder>.fastPathLimit - 2 + Int(random.next() % 5)
            case 17: length = maxFrameSize - 1 + Int(random.next() % 3)
            default: length = Int(random.next() % 40)
            }
            let encoding = random.next() % 15 == 0 ? LengthEncoding.long : random.next() % 15 == 0 ? .word : .shortest
            let seed = UInt8(truncatingIfNeeded: random.next())
            let payload = (0..<length).map { UInt8(truncatingIfNeeded: $0) &+ seed }
            let key = masked ? (UInt8(truncatingIfNeeded: random.next()), UInt8(truncatingIfNeeded: random.next()), UInt8(truncatingIfNeeded: random.next()), UInt8(truncatingIfNeeded: random.next())) : nil
            bytes += Self.frame(fin: fin, rsv: rsv, opcode: opcode, payload: payload, mask: key, encoding: length > 0xFFFF ? .long : encoding)
        }
        if random.next() % 10 == 0 {
            bytes += (0..<(1 + random.next() % 20)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        }
        return bytes
    }

    enum LengthEncoding { case shortest, word, long }

    static func frame(
        fin: Bool,
        rsv: UInt8 = 0,
        opcode: UInt8,
        payload: [UInt8],
        mask: (UInt8, UInt8, UInt8, UInt8)?,
        encoding: LengthEncoding = .shortest
    ) -> [UInt8] {
        var bytes: [UInt8] = [(fin ? 0x80 : 0) | (rsv << 4) | opcode]
        let maskBit: UInt8 = mask == nil ? 0 : 0x80
        switch encoding {
        case .shortest where payload.count < 126:
            bytes.append(maskBit | UInt8(payload.count))
        case .shortest, .word:
            bytes.append(maskBit | 126)
            bytes += withUnsafeBytes(of: UInt16(payload.count).bigEndian, Array.init)
        case .long:
            bytes.append(maskBit | 127)
            bytes += withUnsafeBytes(of: UInt64(payload.count).bigEndian, Array.init)
        }
        guard let mask else { return bytes + payload }
        let key = [mask.0, mask.1, mask.2, mask.3]
        var masked = payload
        for index in masked.indices { masked[index] ^= key[index & 3] }
        return bytes + key + masked
    }

    /// The stream as the socket might deliver it: whole, or cut at random points.
    static func cut(_ stream: [UInt8], using random: inout SplitMix64) -> [[UInt8]] {
        guard random.next() % 4 != 0, stream.count > 1 else { return [stream] }
        var chunks: [[UInt8]] = []
        var start = 0
        let typical = 1 + Int(random.next() % 64)
        while start < stream.count {
            let end = min(stream.count, start + 1 + Int(random.next() % UInt64(typical)))
            chunks.append(Array(stream[start..<end]))
            start = end
        }
        return chunks
    }
}

/// A small deterministic generator, so a failing round can be replayed.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
