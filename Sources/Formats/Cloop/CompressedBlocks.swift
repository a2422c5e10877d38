import CZlib
import VDiskCore

/// Inflates cloop blocks (zlib streams with their header, as `compress2` writes them) through the
/// engine's cache of decompressed units, so that small sequential reads of one block inflate it
/// once.
struct CompressedBlocks: Sendable {
  let file: ImageFile
  let units: DecompressedUnits

  /// A zlib header and up to a 32 KiB window.
  static let windowBits: Int32 = 15

  init(file: ImageFile, blockSize: Int) {
    self.file = file
    // A few blocks: at least four and 1 MiB, at most 64 MiB (one block of the largest size).
    units = DecompressedUnits(unitSize: blockSize, budget: min(max(4 * blockSize, 1 << 20), 64 << 20))
  }

  var blockSize: Int { units.unitSize }

  /// Copies `buffer.count` bytes of the block of `descriptor`, starting `skipping` bytes into it.
  func decode(_ descriptor: CompressedDescriptor, into buffer: UnsafeMutableRawBufferPointer, skipping: Int)
    throws
  {
    try units.copy(descriptor, in: file, into: buffer, skipping: skipping) { out in
      try inflate(descriptor, into: out)
    }
  }

  /// Inflates the block of `descriptor` into `out` (one block). Like QEMU, the stream must end and
  /// give exactly one block.
  private func inflate(_ descriptor: CompressedDescriptor, into out: UnsafeMutableRawBufferPointer) throws {
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
  }
}
