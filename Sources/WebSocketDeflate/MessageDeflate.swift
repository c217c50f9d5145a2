import CompressNIO
package import NIOCore
import NIOPosix

/// Compresses and inflates whole messages for permessage-deflate (RFC 7692 §7.2), each on its own:
/// no context is carried from one message to the next, so the zlib streams are the calling
/// thread's, reset after every message, and no connection holds one.
package enum MessageDeflate {
    package enum InflateFailure: Error, Equatable {
        /// The message inflates to more than the limit (a deflate bomb is stopped there).
        case tooLarge
        /// Not a raw DEFLATE stream.
        case invalid
    }

    /// The compressed payload of a message (the trailing `00 00 ff ff` removed), or nil if zlib
    /// could not compress it (then it goes uncompressed).
    package static func compress(_ payload: ByteBuffer, windowBits: Int) -> ByteBuffer? {
        let level = payload.readableBytes >= Self.fastestFrom ? 1 : 6
        guard let compressor = self.streams.compressor(windowBits: windowBits, level: level) else { return nil }
        defer { try? compressor.reset() }
        var input = payload
        guard var output = try? input.compressStream(with: compressor, flush: .sync), output.readableBytes >= 4 else {
            return nil
        }
        output.moveWriterIndex(to: output.writerIndex - 4)
        return output
    }

    /// Messages this large are compressed at zlib's fastest level: at level 6 a 128 KiB echo spent
    /// 94% of the host's time in zlib (Autobahn's 12.x.15 cases, profiled), and one such message
    /// holds its I/O loop for milliseconds. Smaller ones, most of what a host sends, keep level 6.
    package static let fastestFrom = 64 << 10

    /// The most a message of `limit` bytes can take compressed: DEFLATE's stored blocks add five
    /// bytes per 64 KiB, and a little framing.
    package static func compressedLimit(_ limit: Int) -> Int {
        limit + limit / 1024 + 64
    }

    /// The message a compressed payload carries, at most `limit` bytes.
    package static func inflate(_ payload: ByteBuffer, limit: Int) throws(InflateFailure) -> ByteBuffer {
        guard payload.readableBytes > 0 else { return ByteBuffer() }
        guard let decompressor = self.streams.decompressor else { throw .invalid }
        defer { try? decompressor.reset() }
        var input = payload
        input.writeBytes([0x00, 0x00, 0xFF, 0xFF])
        let inflated: ByteBuffer
        do {
            // One byte of room past the limit: compress-nio reports a buffer filled exactly as an
            // overflow, and a message of exactly `limit` bytes is allowed.
            inflated = try input.decompressStream(with: decompressor, maxSize: limit + 1)
        } catch let error as CompressNIOError where error == .bufferOverflow {
            throw .tooLarge
        } catch {
            throw .invalid
        }
        guard inflated.readableBytes <= limit else { throw .tooLarge }
        return inflated
    }

    private static let perThread = ThreadSpecificVariable<Streams>()

    private static var streams: Streams {
        if let streams = self.perThread.currentValue {
            return streams
        }
        let streams = Streams()
        self.perThread.currentValue = streams
        return streams
    }

    /// One thread's zlib streams: a compressor per window size asked for, one decompressor.
    /// Only ever used by the thread that made it (`ThreadSpecificVariable`), hence unchecked.
    private final class Streams: @unchecked Sendable {
        private var compressors: [Int: ZlibCompressor] = [:]  // by windowBits * 10 + level
        private var inflater: ZlibDecompressor?

        /// nil only if zlib cannot allocate its state.
        func compressor(windowBits: Int, level: Int) -> ZlibCompressor? {
            let key = windowBits * 10 + level
            if let existing = self.compressors[key] {
                return existing
            }
            // Level 6, zlib's default: most of level 9's ratio on JSON at a fraction of its time.
            let configuration = ZlibConfiguration(windowSize: Int32(windowBits), compressionLevel: Int32(level), memoryLevel: 8)
            let created = try? ZlibCompressor(algorithm: .deflate, configuration: configuration)
            self.compressors[key] = created
            return created
        }

        var decompressor: ZlibDecompressor? {
            if let inflater { return inflater }
            self.inflater = try? ZlibDecompressor(algorithm: .deflate, windowSize: 15)
            return self.inflater
        }
    }
}
