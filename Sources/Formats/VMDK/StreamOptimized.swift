import CZlib
import Synchronization
import VDiskCore

/// A 512-byte marker of a stream-optimized extent (vmdk spec, "The marker"): `value` (u64),
/// `size` (u32), then either compressed grain data (size > 0) or a metadata type (u32).
struct StreamMarker {
  enum MetadataType: UInt32 {
    case endOfStream = 0
    case grainTable = 1
    case grainDirectory = 2
    case footer = 3
  }

  var value: UInt64
  var size: UInt32
  var type: UInt32

  init(_ reader: ByteReader, at offset: Int) throws {
    value = try reader.u64le(offset, "marker value")
    size = try reader.u32le(offset + 8, "marker size")
    type = try reader.u32le(offset + 12, "marker type")
  }

  /// Whether this is a metadata marker of `kind` (value and size zero, vmdk spec "Footer
  /// marker", "End of stream marker").
  func isMetadata(_ kind: MetadataType) -> Bool {
    size == 0 && type == kind.rawValue && (kind != .endOfStream || value == 0)
  }
}

/// Inflates compressed grains (vmdk spec, "Compressed grain data": "Contains ZLIB compressed
/// data (DEFLATE + ZLIB header)") and keeps a few decompressed grains, so that small sequential
/// reads of one grain inflate it once.
final class CompressedGrains: Sendable {
  /// The largest grain of the disk's compressed extents.
  let grainSize: Int
  /// Decompressed grains keyed by (extent file, host offset of the grain).
  let cache: TableCache<TableKey, [UInt8]>
  private let inflations = Atomic<Int>(0)

  /// VMDK grains carry a zlib header and up to a 32 KiB window.
  static let windowBits: Int32 = 15
  /// Bytes before the compressed data of a grain with a marker: LBA (u64) and size (u32).
  static let markerHeader = 12

  init(grainSize: Int) {
    self.grainSize = grainSize
    cache = TableCache(budget: min(max(8 * grainSize, 1 << 20), 8 << 20))
  }

  var decompressionCount: Int { inflations.load(ordering: .relaxed) }

  /// How many bytes may hold one compressed grain, marker included: QEMU reads two grains,
  /// since "the compressed grain data can be larger than the grain data size".
  var maxStoredLength: Int { 2 * grainSize }

  /// Copies `buffer.count` bytes of the grain at `descriptor.hostOffset` of `file`, starting
  /// `skipping` bytes into it. `markers`: the extent stores a grain marker before each grain.
  func decode(
    _ descriptor: CompressedDescriptor, file: ImageFile, markers: Bool,
    into buffer: UnsafeMutableRawBufferPointer,
    skipping: Int
  ) throws {
    guard skipping >= 0, skipping <= descriptor.decompressedLength,
      buffer.count <= descriptor.decompressedLength - skipping,
      descriptor.decompressedLength <= grainSize
    else {
      throw VDiskError(
        .invalidArgument, path: file.path, offset: descriptor.hostOffset,
        "read of \(buffer.count) bytes at \(skipping) lies outside a compressed grain")
    }
    let grain = try cache.value(for: TableKey(file: file, offset: descriptor.hostOffset), cost: grainSize) {
      try inflate(descriptor, file: file, markers: markers)
    }
    grain.withUnsafeBytes { source in
      buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[skipping..<(skipping + buffer.count)]))
    }
  }

  private func inflate(_ descriptor: CompressedDescriptor, file: ImageFile, markers: Bool) throws -> [UInt8] {
    let where_ = "compressed grain at \(hex(descriptor.hostOffset)) (guest \(hex(descriptor.guestOffset)))"
    var input = [UInt8](repeating: 0, count: max(0, min(descriptor.compressedLength, maxStoredLength)))
    try input.withUnsafeMutableBytes { try file.readFillingZeros(into: $0, at: descriptor.hostOffset) }
    var dataStart = 0
    var dataLength = input.count
    if markers {
      // Grain marker (vmdk spec, "Compressed grain marker"): LBA, compressed size, data.
      let reader = ByteReader(
        Array(input.prefix(Self.markerHeader)), path: file.path, baseOffset: descriptor.hostOffset)
      let size = Int(try reader.u32le(8, "grain marker size"))
      guard size > 0, size <= input.count - Self.markerHeader else {
        throw VDiskError.corrupt(
          file.path, at: descriptor.hostOffset, "\(where_) has an invalid compressed size of \(size) bytes")
      }
      dataStart = Self.markerHeader
      dataLength = size
    }
    var produced = 0
    var status: Int32 = 0
    let output = [UInt8](unsafeUninitializedCapacity: grainSize) { out, initialized in
      input.withUnsafeBytes { src in
        status = czlib_inflate(
          src.baseAddress.map { $0 + dataStart }, dataLength, out.baseAddress, out.count, Self.windowBits,
          &produced)
      }
      if produced < grainSize, let base = out.baseAddress {
        (base + produced).initialize(repeating: 0, count: grainSize - produced)
      }
      initialized = grainSize
    }
    // The stream must end (QEMU uses uncompress(), which wants Z_STREAM_END) or fill the grain,
    // and must cover the guest bytes the grain stands for (the last grain may be short).
    let ended = status == Z_STREAM_END || (produced == grainSize && (status == Z_OK || status == Z_BUF_ERROR))
    guard ended, produced >= descriptor.decompressedLength else {
      throw VDiskError.corrupt(
        file.path, at: descriptor.hostOffset,
        "\(where_) does not inflate (zlib status \(status), \(produced) of \(descriptor.decompressedLength) bytes)"
      )
    }
    inflations.add(1, ordering: .relaxed)
    return output
  }
}
