import CBzip2
import CLzma
import CZlib
import VDiskCore

/// Decodes a DMG's compressed chunks through the engine's cache of decompressed units, so that
/// small sequential reads of one chunk decode it once. Every decoder must produce exactly the
/// chunk's sector count × 512 bytes: a stream that ends early, runs on past that (a
/// decompression bomb stops there) or is damaged is refused with the chunk's place.
struct ChunkDecoder: Sendable {
  let file: ImageFile
  let units: DecompressedUnits
  /// liblzma's memory cap (an xz dictionary is at most 1.5 GiB; DMG writers use 8 MiB or so).
  static let lzmaMemoryLimit: UInt64 = 256 << 20

  init(file: ImageFile, largestChunk: Int) {
    self.file = file
    let unit = max(largestChunk, 512)
    units = DecompressedUnits(unitSize: unit, budget: min(max(4 * unit, 4 << 20), 64 << 20))
  }

  /// Copies `buffer.count` bytes of `chunk` (described by `descriptor`), starting `skipping`
  /// bytes into it.
  func decode(
    _ chunk: Chunk, _ descriptor: CompressedDescriptor, into buffer: UnsafeMutableRawBufferPointer,
    skipping: Int
  ) throws {
    try units.copy(descriptor, in: file, into: buffer, skipping: skipping) { out in
      // A unit is the size of the largest chunk; a smaller chunk fills its start.
      let size = descriptor.decompressedLength
      let target = UnsafeMutableRawBufferPointer(rebasing: out[0..<size])
      try decompress(chunk, descriptor, into: target)
      if out.count > size {
        UnsafeMutableRawBufferPointer(rebasing: out[size...]).initializeMemory(as: UInt8.self, repeating: 0)
      }
    }
  }

  private func decompress(
    _ chunk: Chunk, _ descriptor: CompressedDescriptor, into out: UnsafeMutableRawBufferPointer
  ) throws {
    let input = try file.readBytes(
      at: descriptor.hostOffset, count: descriptor.compressedLength, what: "DMG chunk")
    let produced: Int
    let detail: String
    switch chunk.kind {
    case .zlib:
      var made = 0
      let status = input.withUnsafeBytes { src in
        czlib_inflate(src.baseAddress, src.count, out.baseAddress, out.count, 15, &made)
      }
      produced = status == Z_STREAM_END ? made : -1
      detail = "zlib status \(status), \(made) bytes"
    case .bzip2:
      produced = input.withUnsafeBytes { src in
        cbzip2_decompress(src.baseAddress, src.count, out.baseAddress, out.count)
      }
      detail = produced == -2 ? "bzip2 stream longer than the chunk" : "bzip2 result \(produced)"
    case .lzma:
      produced = input.withUnsafeBytes { src in
        clzma_decompress(src.baseAddress, src.count, out.baseAddress, out.count, Self.lzmaMemoryLimit)
      }
      detail = produced == -2 ? "LZMA stream longer than the chunk" : "LZMA result \(produced)"
    case .adc:
      produced = input.withUnsafeBytes { ADC.decode($0, into: out) } ?? -1
      detail = "ADC data damaged or longer than the chunk"
    case .zero, .raw:
      throw VDiskError(.invalidArgument, path: file.path, "DMG \(chunk.kind) chunk has nothing to decode")
    }
    guard produced == out.count else {
      throw VDiskError.corrupt(
        file.path, at: descriptor.hostOffset,
        "DMG \(chunk.kind) chunk at \(hex(descriptor.hostOffset)) (guest \(hex(descriptor.guestOffset))) does not decode to its \(out.count) bytes (\(detail))"
      )
    }
  }
}
