import CZlib
import CZstd
import Synchronization
import VDiskCore

/// Decodes compressed clusters (qcow2 spec, "Compressed Clusters Descriptor"; raw deflate, the
/// compression type QEMU calls "zlib", or zstd, per the header's compression_type) and keeps a
/// few decompressed clusters, so that sequential small reads of one compressed cluster decode it
/// once.
final class CompressedClusters: Sendable {
  let file: ImageFile
  let clusterSize: Int
  /// qcow2 spec, "compression_type": 0 deflate, 1 zstd (the header refuses other values).
  let compressionType: UInt8
  /// Decompressed clusters keyed by the host offset of their compressed data.
  let cache: TableCache<UInt64, [UInt8]>
  private let inflations = Atomic<Int>(0)

  /// qcow2 stores raw deflate streams with a 4 KiB window (QEMU: windowBits -12).
  static let windowBits: Int32 = -12

  init(file: ImageFile, clusterSize: Int, compressionType: UInt8) {
    self.file = file
    self.clusterSize = clusterSize
    self.compressionType = compressionType
    // A few clusters: at least four and 1 MiB, at most 16 MiB.
    cache = TableCache(budget: min(max(4 * clusterSize, 1 << 20), 16 << 20))
  }

  /// How many clusters have been inflated (cache misses that decoded).
  var decompressionCount: Int { inflations.load(ordering: .relaxed) }

  /// Copies `buffer.count` bytes of the cluster described by `descriptor`, starting `skipping`
  /// bytes into it, into `buffer`.
  func decode(_ descriptor: CompressedDescriptor, into buffer: UnsafeMutableRawBufferPointer, skipping: Int)
    throws
  {
    guard skipping >= 0, skipping <= clusterSize, buffer.count <= clusterSize - skipping else {
      throw VDiskError(
        .invalidArgument, path: file.path, offset: descriptor.hostOffset,
        "read of \(buffer.count) bytes at \(skipping) lies outside a compressed cluster")
    }
    if skipping == 0, buffer.count == clusterSize, cache.get(descriptor.hostOffset) == nil {
      // A whole cluster (sequential reads): decode straight into the reply, without caching a
      // cluster that will not be asked for again.
      try decompress(descriptor, into: buffer)
      return
    }
    let cluster = try cache.value(for: descriptor.hostOffset, cost: clusterSize) {
      try [UInt8](unsafeUninitializedCapacity: clusterSize) { out, initialized in
        try decompress(descriptor, into: UnsafeMutableRawBufferPointer(out))
        initialized = clusterSize
      }
    }
    cluster.withUnsafeBytes { source in
      buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[skipping..<(skipping + buffer.count)]))
    }
  }

  /// Decompresses the cluster of `descriptor` into `out` (`clusterSize` bytes, all initialized
  /// on return even when it throws).
  private func decompress(_ descriptor: CompressedDescriptor, into out: UnsafeMutableRawBufferPointer) throws
  {
    do {
      if compressionType == 1 {
        try decompressZstd(descriptor, into: out)
      } else {
        try inflate(descriptor, into: out)
      }
    } catch {
      out.initializeMemory(as: UInt8.self, repeating: 0)
      throw error
    }
  }

  private func input(_ descriptor: CompressedDescriptor) throws -> [UInt8] {
    var input = [UInt8](repeating: 0, count: max(0, descriptor.compressedLength))
    try input.withUnsafeMutableBytes { try file.readFillingZeros(into: $0, at: descriptor.hostOffset) }
    return input
  }

  /// A zstd-compressed cluster (compression_type 1). Like QEMU's qcow2_zstd_decompress, success
  /// means the frame filled the whole cluster; the input may be only partly consumed.
  private func decompressZstd(_ descriptor: CompressedDescriptor, into out: UnsafeMutableRawBufferPointer)
    throws
  {
    let input = try input(descriptor)
    let produced = input.withUnsafeBytes { src in
      czstd_decompress(src.baseAddress, src.count, out.baseAddress, out.count)
    }
    guard produced == clusterSize else {
      throw VDiskError.corrupt(
        file.path, at: descriptor.hostOffset,
        "compressed cluster at \(hex(descriptor.hostOffset)) (guest \(hex(descriptor.guestOffset))) does not decompress as zstd (\(produced < 0 ? "corrupt frame" : "\(produced) of \(clusterSize) bytes"))"
      )
    }
    inflations.add(1, ordering: .relaxed)
  }

  private func inflate(_ descriptor: CompressedDescriptor, into out: UnsafeMutableRawBufferPointer) throws {
    let input = try input(descriptor)
    var produced = 0
    let status = input.withUnsafeBytes { src in
      czlib_inflate(src.baseAddress, src.count, out.baseAddress, out.count, Self.windowBits, &produced)
    }
    // Like QEMU's qcow2_zlib_decompress: success means the output cluster was filled; the input
    // may be only partly consumed because its length is known only to the sector.
    guard produced == clusterSize, status == Z_STREAM_END || status == Z_BUF_ERROR || status == Z_OK else {
      throw VDiskError.corrupt(
        file.path, at: descriptor.hostOffset,
        "compressed cluster at \(hex(descriptor.hostOffset)) (guest \(hex(descriptor.guestOffset))) does not inflate (zlib status \(status), \(produced) of \(clusterSize) bytes)"
      )
    }
    inflations.add(1, ordering: .relaxed)
  }
}
