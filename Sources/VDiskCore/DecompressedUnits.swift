import Synchronization

/// The decompressed units (compressed clusters, grains, blocks) of a layer, kept in a small
/// least-recently-used `TableCache`, so that small sequential reads of one unit decompress it
/// once. A format supplies only the decompression; a read of a whole unit that is not cached
/// (sequential reads of large requests) decompresses straight into the reply and caches nothing.
public final class DecompressedUnits: Sendable {
  /// The size every unit decompresses to.
  public let unitSize: Int
  /// Units keyed by (file, host offset of the compressed data).
  let cache: TableCache<TableKey, [UInt8]>
  private let decoded = Atomic<Int>(0)

  /// `budget`: bytes of decompressed units to keep (at least one unit is always kept).
  public init(unitSize: Int, budget: Int) {
    self.unitSize = unitSize
    cache = TableCache(budget: budget)
  }

  /// How many units have been decompressed (cache misses that decoded).
  public var decompressionCount: Int { decoded.load(ordering: .relaxed) }

  /// Copies `buffer.count` bytes of the unit `descriptor` names in `file`, starting `skipping`
  /// bytes into it. `decompress` fills its argument (`unitSize` bytes) with the whole unit or
  /// throws; what it leaves behind on a throw is zeroed and never cached.
  public func copy(
    _ descriptor: CompressedDescriptor, in file: ImageFile, into buffer: UnsafeMutableRawBufferPointer,
    skipping: Int, decompress: (UnsafeMutableRawBufferPointer) throws -> Void
  ) throws {
    guard skipping >= 0, skipping <= unitSize, buffer.count <= unitSize - skipping else {
      throw VDiskError(
        .invalidArgument, path: file.path, offset: descriptor.hostOffset,
        "read of \(buffer.count) bytes at \(skipping) lies outside a compressed unit of \(unitSize) bytes")
    }
    let key = TableKey(file: file, offset: descriptor.hostOffset)
    if skipping == 0, buffer.count == unitSize, cache.get(key) == nil {
      try run(decompress, into: buffer)
      return
    }
    let unit = try cache.value(for: key, cost: unitSize) {
      try [UInt8](unsafeUninitializedCapacity: unitSize) { out, initialized in
        try run(decompress, into: UnsafeMutableRawBufferPointer(out))
        initialized = unitSize
      }
    }
    unit.withUnsafeBytes { source in
      buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[skipping..<(skipping + buffer.count)]))
    }
  }

  private func run(
    _ decompress: (UnsafeMutableRawBufferPointer) throws -> Void, into out: UnsafeMutableRawBufferPointer
  )
    throws
  {
    do {
      try decompress(out)
    } catch {
      out.initializeMemory(as: UInt8.self, repeating: 0)
      throw error
    }
    decoded.add(1, ordering: .relaxed)
  }
}
