import CZlib
import Synchronization
import VDiskCore

/// Inflates cloop blocks (zlib streams with their header, as `compress2` writes them) and keeps a
/// few decompressed blocks, so that small sequential reads of one block inflate it once.
final class CompressedBlocks: Sendable {
  let file: ImageFile
  let blockSize: Int
  /// Decompressed blocks keyed by the host offset of their compressed data.
  let cache: TableCache<UInt64, [UInt8]>
  private let inflations = Atomic<Int>(0)

  /// A zlib header and up to a 32 KiB window.
  static let windowBits: Int32 = 15

  init(file: ImageFile, blockSize: Int) {
    self.file = file
    self.blockSize = blockSize
    // A few blocks: at least four and 1 MiB, at most 64 MiB (one block of the largest size).
    cache = TableCache(budget: min(max(4 * blockSize, 1 << 20), 64 << 20))
  }

  /// How many blocks have been inflated (cache misses that decoded).
  var decompressionCount: Int { inflations.load(ordering: .relaxed) }

  /// Copies `buffer.count` bytes of the block of `descriptor`, starting `skipping` bytes into it.
  func decode(_ descriptor: CompressedDescriptor, into buffer: UnsafeMutableRawBufferPointer, skipping: Int)
    throws
  {
    guard skipping >= 0, skipping <= blockSize, buffer.count <= blockSize - skipping else {
      throw VDiskError(
        .invalidArgument, path: file.path, offset: descriptor.hostOffset,
        "read of \(buffer.count) bytes at \(skipping) lies outside a cloop block")
    }
    if skipping == 0, buffer.count == blockSize, cache.get(descriptor.hostOffset) == nil {
      // A whole block (sequential reads): inflate straight into the reply.
      try inflate(descriptor, into: buffer)
      return
    }
    let block = try cache.value(for: descriptor.hostOffset, cost: blockSize) {
      try [UInt8](unsafeUninitializedCapacity: blockSize) { out, initialized in
        try inflate(descriptor, into: UnsafeMutableRawBufferPointer(out))
        initialized = blockSize
      }
    }
    block.withUnsafeBytes { source in
      buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[skipping..<(skipping + buffer.count)]))
    }
  }

  /// Inflates the block of `descriptor` into `out` (`blockSize` bytes, all initialized on return
  /// even when it throws). Like QEMU, the stream must end and give exactly one block.
  private func inflate(_ descriptor: CompressedDescriptor, into out: UnsafeMutableRawBufferPointer) throws {
    do {
      let input = try file.readBytes(
        at: descriptor.hostOffset, count: descriptor.compressedLength, what: "cloop block")
      var produced = 0
      let status = input.withUnsafeBytes { src in
        czlib_inflate(src.baseAddress, src.count, out.baseAddress, out.count, Self.windowBits, &produced)
      }
      guard status == Z_STREAM_END, produced == blockSize else {
        throw VDiskError.corrupt(
          file.path, at: descriptor.hostOffset,
          "cloop block at \(hex(descriptor.hostOffset)) (guest \(hex(descriptor.guestOffset))) does not inflate to one block (zlib status \(status), \(produced) of \(blockSize) bytes)"
        )
      }
      inflations.add(1, ordering: .relaxed)
    } catch {
      out.initializeMemory(as: UInt8.self, repeating: 0)
      throw error
    }
  }
}
