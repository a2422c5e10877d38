import VDiskCore

/// The fixed shape of a writable qcow2 image, derived once from its header.
struct WriteGeometry: Sendable {
  let path: String
  let version: UInt32
  let clusterBits: UInt32
  let extendedL2: Bool
  let hasBacking: Bool
  let refcounts: RefcountCodec

  var clusterSize: UInt64 { 1 << UInt64(clusterBits) }
  /// 1 word per L2 entry, or 2 with extended L2 entries.
  var wordsPerEntry: Int { extendedL2 ? 2 : 1 }
  /// Entries in one L2 table.
  var l2Entries: UInt64 { clusterSize / UInt64(8 * wordsPerEntry) }
  /// Allocation units per cluster: 32 subclusters with extended L2 entries, else the cluster.
  var units: Int { extendedL2 ? 32 : 1 }
  var unitSize: UInt64 { clusterSize / UInt64(units) }
  /// Mask of all units of a cluster.
  var allUnits: UInt32 { extendedL2 ? .max : 1 }
  /// Clusters one refcount block describes.
  var refcountBlockEntries: UInt64 { refcounts.entries(clusterSize: clusterSize) }

  func roundUp(_ value: UInt64) -> UInt64 { (value + clusterSize - 1) & ~(clusterSize - 1) }

  /// L1 entries a disk of `size` bytes needs.
  func l1Entries(forSize size: UInt64) -> UInt64 {
    let clusters = (size + clusterSize - 1) >> UInt64(clusterBits)
    return (clusters + l2Entries - 1) / l2Entries
  }
}

/// A run of host bytes whose clusters lose one reference once the metadata that dropped them is
/// on disk.
struct HostRange: Sendable, Equatable {
  var offset: UInt64
  var length: UInt64
}

/// Everything the writer changes, guarded by `QCOW2Writer`'s mutex: the active L1 table, which L2
/// tables and refcount blocks are dirty (their words live in the chain's `MetadataCache`, dirty
/// entries counted against its budget), the refcount table, the free-cluster cursor, and frees
/// that wait for their metadata to reach the disk. Metadata I/O happens under that mutex; data
/// I/O never does, and readers never take it (they read `activeL1` and the cache).
struct WriteState {
  let file: ImageFile
  let cache: MetadataCache
  let geometry: WriteGeometry
  var virtualSize: UInt64
  /// qcow2 v3 can set the corrupt bit; v2 has no feature fields.
  var isCorrupt = false

  // Active L1 table (qcow2 spec, "Cluster mapping"), all `l1_size` entries, as stored; every
  // change is mirrored into `activeL1` for readers.
  var l1: [UInt64]
  let activeL1: ActiveL1
  var l1Offset: UInt64
  /// The L1 table the header on disk names (offset, entries).
  var diskL1: (offset: UInt64, entries: Int)
  var dirtyL1: Set<Int> = []

  /// Offsets of L2 tables changed in the cache and not yet written.
  var dirtyL2: Set<UInt64> = []
  /// Offsets of the active L2 tables (for overlap checks).
  var l2Offsets: Set<UInt64> = []

  // Refcount table (qcow2 spec, "Host cluster management").
  var refTable: [UInt64]
  var refTableOffset: UInt64
  var diskRefTable: (offset: UInt64, clusters: Int)
  var dirtyRefTable: Set<Int> = []
  /// Offsets of refcount blocks changed in the cache and not yet written.
  var dirtyBlocks: Set<UInt64> = []
  var refBlockOffsets: Set<UInt64> = []
  /// No cluster below this index is free.
  var freeCursor: UInt64 = 0
  /// Clusters chosen but not yet refcounted (skipped by the free-cluster search).
  var reserved: [Range<UInt64>] = []

  /// References dropped from L2 tables or the L1 table: decremented after those are on disk.
  var pendingFrees: [HostRange] = []
  /// Old L1/refcount tables: decremented after the header naming their successors is on disk.
  var afterHeaderFrees: [HostRange] = []
  /// Snapshot table and snapshot L1 tables.
  var snapshotExtents: [Range<UInt64>]

  init(file: ImageFile, header: QCOW2Header, hasBacking: Bool, cache: MetadataCache) throws {
    self.file = file
    self.cache = cache
    geometry = WriteGeometry(
      path: file.path, version: header.version, clusterBits: header.clusterBits,
      extendedL2: header.hasExtendedL2, hasBacking: hasBacking,
      refcounts: RefcountCodec(order: header.refcountOrder))
    virtualSize = header.virtualSize
    l1 = try file.readWords(at: header.l1TableOffset, count: Int(header.l1Size))
    activeL1 = ActiveL1(l1)
    l1Offset = header.l1TableOffset
    diskL1 = (header.l1TableOffset, Int(header.l1Size))
    let refEntries = UInt64(header.refcountTableClusters) * header.clusterSize / 8
    guard refEntries * 8 <= Self.maxRefcountTableBytes else {
      throw VDiskError.unsupported(file.path, "refcount table of \(refEntries) entries is too large")
    }
    refTable = try file.readWords(at: header.refcountTableOffset, count: Int(refEntries))
    refTableOffset = header.refcountTableOffset
    diskRefTable = (header.refcountTableOffset, Int(header.refcountTableClusters))
    snapshotExtents = try SnapshotTable.extents(file: file, header: header)
    for entry in l1 where entry & L2EntryDecoder.offsetMask != 0 {
      l2Offsets.insert(entry & L2EntryDecoder.offsetMask)
    }
    for entry in refTable where entry & Self.refTableOffsetMask != 0 {
      refBlockOffsets.insert(entry & Self.refTableOffsetMask)
    }
  }

  /// qcow2 spec, "Refcount table entry": bits 9–63 hold the block offset.
  static let refTableOffsetMask: UInt64 = 0xFFFF_FFFF_FFFF_FE00
  /// QEMU's limit is 8 MiB; ours is generous but bounded.
  static let maxRefcountTableBytes: UInt64 = 64 << 20

  var clusterSize: UInt64 { geometry.clusterSize }
  var path: String { geometry.path }

  // MARK: L2 tables

  /// The current words of the L2 table at `offset` (dirty or clean, from the cache, or read).
  func table(at offset: UInt64) throws -> [UInt64] {
    try file.l2Table(at: offset, clusterSize: Int(clusterSize), cache: cache)
  }

  /// Stores changed words of the L2 table at `offset` in the cache, dirty.
  mutating func storeTable(_ words: [UInt64], at offset: UInt64) {
    cache.insert(
      TableKey(file: file, offset: offset, kind: QCOW2TableKind.l2), words, cost: Int(clusterSize),
      dirty: true)
    dirtyL2.insert(offset)
  }

  /// Sets L1 entry `index`, for the writer and for readers.
  mutating func setL1(_ index: Int, _ value: UInt64) {
    l1[index] = value
    activeL1.set(index, value)
    dirtyL1.insert(index)
  }

  /// The L2 table L1 entry `index` names (offset and words), or nil when unallocated.
  mutating func l2Table(l1Index index: Int) throws -> (offset: UInt64, words: [UInt64])? {
    guard index < l1.count else { return nil }
    let offset = l1[index] & L2EntryDecoder.offsetMask
    guard offset != 0 else { return nil }
    guard offset & (clusterSize - 1) == 0 else {
      throw VDiskError.corrupt(
        path, at: offset, "L2 table offset \(hex(offset)) (L1 index \(index)) is not cluster-aligned")
    }
    return (offset, try table(at: offset))
  }

  /// Sets words of the L2 table at `offset` (index, value), marking the table dirty. Readers
  /// holding the old words keep them: the table is copied, once per call.
  mutating func setWords(_ changes: [(word: Int, value: UInt64)], table offset: UInt64) throws {
    var words = try table(at: offset)
    for change in changes { words[change.word] = change.value }
    storeTable(words, at: offset)
  }

  // MARK: Consistency

  /// Names the metadata structure that host bytes `[offset, offset + length)` overlap, or nil.
  /// Checked before writing guest data in place and before using a newly allocated cluster.
  func metadataOverlap(_ offset: UInt64, length: UInt64, includingL2: Bool = true) -> String? {
    let range = offset..<offset + length
    if offset < clusterSize { return "the header" }
    let l1Bytes = geometry.roundUp(UInt64(max(1, l1.count)) * 8)
    if range.overlaps(l1Offset..<l1Offset + l1Bytes) { return "the L1 table" }
    let refBytes = geometry.roundUp(UInt64(refTable.count) * 8)
    if range.overlaps(refTableOffset..<refTableOffset + refBytes) { return "the refcount table" }
    if let snapshot = snapshotExtents.first(where: {
      range.overlaps(($0.lowerBound & ~(clusterSize - 1))..<geometry.roundUp($0.upperBound))
    }) {
      return "snapshot metadata at \(hex(snapshot.lowerBound))"
    }
    var cluster = offset & ~(clusterSize - 1)
    while cluster < range.upperBound {
      if refBlockOffsets.contains(cluster) { return "a refcount block" }
      if includingL2, l2Offsets.contains(cluster) { return "an L2 table" }
      cluster += clusterSize
    }
    return nil
  }

  /// Sets the header's corrupt bit (version 3), refuses all further writes, and returns the
  /// `.corrupt` error to throw. Never overwrites other metadata.
  mutating func markCorrupt(at offset: UInt64, _ detail: String) -> VDiskError {
    isCorrupt = true
    if geometry.version >= 3 {
      if let features = try? file.readBytes(at: HeaderField.incompatibleFeatures.offset, count: 8) {
        let value = features.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        try? file.writeHeaderField(.incompatibleFeatures, value | QCOW2Header.incompatibleCorrupt)
        try? file.dataSync()
      }
    }
    return VDiskError.corrupt(path, at: offset, "\(detail); the image is now marked corrupt")
  }

  func checkWritable() throws {
    guard !isCorrupt else {
      throw VDiskError.corrupt(path, "image is marked corrupt; repair with qemu-img check -r all")
    }
  }
}
