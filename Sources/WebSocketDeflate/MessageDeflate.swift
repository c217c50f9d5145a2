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
        guard let compressor = self.streams.compressor(windowBits: windowBits) else { return nil }
        defer { try? compressor.reset() }
        var input = payload
        guard var output = try? input.compressStream(with: compressor, flush: .sync), output.readableBytes >= 4 else {
            return nil
        }
        output.moveWriterIndex(to: output.writerIndex - 4)
        return output
    }

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
        private var compressors: [Int: ZlibCompressor] = [:]
        private var inflater: ZlibDecompressor?

        /// nil only if zlib cannot allocate its state.
        func compressor(windowBits: Int) -> ZlibCompressor? {
            if let existing = self.compressors[windowBits] {
                return existing
            }
            // Level 6, zlib's default: most of level 9's ratio on JSON at a fraction of its time.
            let configuration = ZlibConfiguration(windowSize: Int32(windowBits), compressionLevel: 6, memoryLevel: 8)
            let created = try? ZlibCompressor(algorithm: .deflate, configuration: configuration)
            self.compressors[windowBits] = created
            return created
        }

        var decompressor: ZlibDecompressor? {
            if let inflater { return inflater }
            self.inflater = try? ZlibDecompressor(algorithm: .deflate, windowSize: 15)
            return self.inflater
        }
    }
}
