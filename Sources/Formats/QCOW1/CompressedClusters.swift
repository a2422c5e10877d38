import CZlib
import VDiskCore

/// Decodes compressed qcow v1 clusters (qcow.asciidoc: raw deflate with a 4 KiB window, zlib
/// window bits -12) and keeps a few decompressed clusters, so that small sequential reads of one
/// cluster inflate it once.
final class QCOW1CompressedClusters: Sendable {
  let file: ImageFile
  let clusterSize: Int
  /// Decompressed clusters keyed by the host offset of their compressed bytes.
  let cache: TableCache<UInt64, [UInt8]>
  static let windowBits: Int32 = -12

  init(file: ImageFile, clusterSize: Int) {
    self.file = file
    self.clusterSize = clusterSize
    cache = TableCache(budget: max(16 * clusterSize, 1 << 20))
  }

  func decode(_ descriptor: CompressedDescriptor, into buffer: UnsafeMutableRawBufferPointer, skipping: Int)
    throws
  {
    guard skipping >= 0, skipping <= clusterSize, buffer.count <= clusterSize - skipping else {
      throw VDiskError(
        .invalidArgument, path: file.path, offset: descriptor.hostOffset,
        "read of \(buffer.count) bytes at \(skipping) lies outside a compressed cluster")
    }
    let cluster = try cache.value(for: descriptor.hostOffset, cost: clusterSize) {
      try inflate(descriptor)
    }
    cluster.withUnsafeBytes { source in
      buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[skipping..<(skipping + buffer.count)]))
    }
  }

  /// Like QEMU's decompress_buffer: success means the stream filled the whole cluster.
  private func inflate(_ descriptor: CompressedDescriptor) throws -> [UInt8] {
    var input = [UInt8](repeating: 0, count: max(0, descriptor.compressedLength))
    try input.withUnsafeMutableBytes { try file.readFillingZeros(into: $0, at: descriptor.hostOffset) }
    var out = [UInt8](repeating: 0, count: clusterSize)
    var produced = 0
    let status = input.withUnsafeBytes { src in
      out.withUnsafeMutableBytes { dst in
        czlib_inflate(src.baseAddress, src.count, dst.baseAddress, dst.count, Self.windowBits, &produced)
      }
    }
    guard produced == clusterSize, status == Z_STREAM_END || status == Z_BUF_ERROR || status == Z_OK else {
      throw VDiskError.corrupt(
        file.path, at: descriptor.hostOffset,
        "compressed cluster at \(hex(descriptor.hostOffset)) (guest \(hex(descriptor.guestOffset))) does not inflate (zlib status \(status), \(produced) of \(clusterSize) bytes)"
      )
    }
    return out
  }
}
