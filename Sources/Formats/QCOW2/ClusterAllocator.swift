import VDiskCore

/// Refcounts and allocation (qcow2 spec, "Host cluster management"), in the spirit of QEMU's
/// `alloc_clusters_noref` + `update_refcount`: find free clusters from a cursor, reserve them,
/// then count them, allocating refcount blocks (self-describing where possible) and growing the
/// refcount table as needed. Changes stay in memory, dirty, until `writeBack`.
extension WriteState {
  /// The refcount block at `offset` (its bytes as stored, in 64-bit words): from the cache, or
  /// loaded (and checked) and cached.
  mutating func refcountBlock(at offset: UInt64) throws -> [UInt64] {
    guard offset & (clusterSize - 1) == 0, offset >= clusterSize else {
      throw markCorrupt(at: offset, "refcount block offset \(hex(offset)) is invalid")
    }
    let size = Int(clusterSize)
    return try cache.value(for: blockKey(offset), cost: size) {
      try [UInt64](unsafeUninitializedCapacity: size / 8) { buffer, initialized in
        try file.readExactly(into: UnsafeMutableRawBufferPointer(buffer), at: offset, what: "refcount block")
        initialized = size / 8
      }
    }
  }

  func blockKey(_ offset: UInt64) -> TableKey {
    TableKey(file: file, offset: offset, kind: QCOW2TableKind.refcountBlock)
  }

  /// Stores a changed refcount block in the cache, dirty.
  mutating func storeBlock(_ block: [UInt64], at offset: UInt64) {
    cache.insert(blockKey(offset), block, cost: Int(clusterSize), dirty: true)
    dirtyBlocks.insert(offset)
  }

  /// The refcount of host cluster `cluster` (an index); 0 where no block covers it.
  mutating func refcount(ofCluster cluster: UInt64) throws -> UInt64 {
    let perBlock = geometry.refcountBlockEntries
    let tableIndex = cluster / perBlock
    guard tableIndex < UInt64(refTable.count) else { return 0 }
    let blockOffset = refTable[Int(tableIndex)] & Self.refTableOffsetMask
    guard blockOffset != 0 else { return 0 }
    return geometry.refcounts.get(try refcountBlock(at: blockOffset), Int(cluster % perBlock))
  }

  /// Adds `delta` (±1) to the refcount of host cluster `cluster`. A count that would leave its
  /// range means the metadata is inconsistent: the image is marked corrupt.
  mutating func updateRefcount(ofCluster cluster: UInt64, by delta: Int64) throws {
    let perBlock = geometry.refcountBlockEntries
    let tableIndex = cluster / perBlock
    if tableIndex >= UInt64(refTable.count) {
      guard delta > 0 else {
        throw markCorrupt(
          at: cluster * clusterSize, "freeing cluster \(hex(cluster * clusterSize)) with no refcount")
      }
      try growRefcountTable(minEntries: tableIndex + 1)
    }
    var blockOffset = refTable[Int(tableIndex)] & Self.refTableOffsetMask
    if blockOffset == 0 {
      guard delta > 0 else {
        throw markCorrupt(
          at: cluster * clusterSize, "freeing cluster \(hex(cluster * clusterSize)) with no refcount")
      }
      blockOffset = try allocateRefcountBlock(tableIndex: Int(tableIndex))
    }
    // Only the writer reads refcount blocks, so taking the block out of the cache while it
    // changes is safe, and spares a copy of the cluster.
    var block = try refcountBlock(at: blockOffset)
    cache.remove(blockKey(blockOffset))
    defer { storeBlock(block, at: blockOffset) }
    let index = Int(cluster % perBlock)
    let old = geometry.refcounts.get(block, index)
    let (new, overflow): (UInt64, Bool) =
      delta >= 0
      ? old.addingReportingOverflow(UInt64(delta)) : old.subtractingReportingOverflow(UInt64(-delta))
    if overflow || new > geometry.refcounts.maxValue {
      if delta < 0 {
        throw markCorrupt(
          at: cluster * clusterSize, "refcount of cluster \(hex(cluster * clusterSize)) drops below 0")
      }
      throw VDiskError(
        .unsupported, path: path, offset: cluster * clusterSize,
        "refcount of cluster \(hex(cluster * clusterSize)) would exceed \(geometry.refcounts.maxValue) (refcount_bits \(geometry.refcounts.bits))"
      )
    }
    geometry.refcounts.set(&block, index, new)
    if new == 0, cluster < freeCursor { freeCursor = cluster }
  }

  /// Drops one reference from every cluster that host bytes `range` touch.
  mutating func free(_ range: HostRange) throws {
    guard range.length > 0 else { return }
    let first = range.offset >> UInt64(geometry.clusterBits)
    let last = (range.offset + range.length - 1) >> UInt64(geometry.clusterBits)
    for cluster in first...last { try updateRefcount(ofCluster: cluster, by: -1) }
  }

  private func isReserved(_ cluster: UInt64) -> Bool {
    reserved.contains { $0.contains(cluster) }
  }

  /// The first cluster index of a run of `count` free, unreserved clusters, searching from the
  /// free cursor (which moves to the first free cluster seen).
  mutating func findFree(_ count: UInt64) throws -> UInt64 {
    let perBlock = geometry.refcountBlockEntries
    // qcow2 spec, "Cluster mapping": host offsets must stay below 2^56.
    let limit = (UInt64(1) << 56) >> UInt64(geometry.clusterBits)
    var start = freeCursor
    var run: UInt64 = 0
    var firstFree: UInt64?
    var cluster = freeCursor
    while run < count {
      guard cluster < limit else {
        throw VDiskError(.noSpace, path: path, "no room for \(count) more clusters below 64 PiB")
      }
      let tableIndex = cluster / perBlock
      let blockOffset =
        tableIndex < UInt64(refTable.count) ? refTable[Int(tableIndex)] & Self.refTableOffsetMask : 0
      let isFree: Bool
      if blockOffset == 0 {
        isFree = true
      } else {
        isFree = geometry.refcounts.get(try refcountBlock(at: blockOffset), Int(cluster % perBlock)) == 0
      }
      if isFree, firstFree == nil { firstFree = cluster }
      if isFree, !isReserved(cluster) {
        run += 1
      } else {
        run = 0
        start = cluster + 1
      }
      cluster += 1
    }
    if let firstFree { freeCursor = firstFree }
    return start
  }

  /// Allocates `count` contiguous clusters with refcount 1 and returns the host offset of the
  /// first. Refuses (marking the image corrupt) to hand out a cluster that holds metadata.
  mutating func allocate(clusters count: UInt64) throws -> UInt64 {
    guard count > 0 else { throw VDiskError(.invalidArgument, path: path, "allocation of no clusters") }
    let start = try findFree(count)
    let offset = start << UInt64(geometry.clusterBits)
    if let what = metadataOverlap(offset, length: count * clusterSize) {
      throw markCorrupt(at: offset, "free cluster \(hex(offset)) overlaps \(what) (refcount 0 on metadata)")
    }
    reserved.append(start..<start + count)
    defer { reserved.removeAll { $0 == start..<start + count } }
    for cluster in start..<start + count { try updateRefcount(ofCluster: cluster, by: 1) }
    return offset
  }

  /// Allocates the refcount block for refcount table entry `tableIndex` (which is 0): a zeroed
  /// block, counted by itself when it falls in its own range.
  private mutating func allocateRefcountBlock(tableIndex: Int) throws -> UInt64 {
    let cluster = try findFree(1)
    let offset = cluster << UInt64(geometry.clusterBits)
    if let what = metadataOverlap(offset, length: clusterSize) {
      throw markCorrupt(at: offset, "free cluster \(hex(offset)) overlaps \(what) (refcount 0 on metadata)")
    }
    reserved.append(cluster..<cluster + 1)
    defer { reserved.removeAll { $0 == cluster..<cluster + 1 } }
    storeBlock([UInt64](repeating: 0, count: Int(clusterSize / 8)), at: offset)
    refTable[tableIndex] = offset
    dirtyRefTable.insert(tableIndex)
    refBlockOffsets.insert(offset)
    try updateRefcount(ofCluster: cluster, by: 1)
    return offset
  }

  /// Moves the refcount table to a larger run of free clusters (QEMU grows it by half). The new
  /// table is written whole at the next write-back, then the header; the old one is freed only
  /// after that header is on disk (or at once if the disk never saw it).
  mutating func growRefcountTable(minEntries: UInt64) throws {
    let perCluster = clusterSize / 8
    let perBlock = geometry.refcountBlockEntries
    var entries = max(minEntries, UInt64(refTable.count) + UInt64(refTable.count) / 2, perCluster)
    var count: UInt64
    var start: UInt64
    while true {
      count = (entries + perCluster - 1) / perCluster
      guard count * clusterSize <= Self.maxRefcountTableBytes else {
        throw VDiskError(
          .noSpace, path: path, "the refcount table would exceed \(Self.maxRefcountTableBytes) bytes")
      }
      start = try findFree(count)
      // The table must also describe itself and a few refcount blocks placed after it.
      let needed = (start + count + 2) / perBlock + 2
      if needed <= count * perCluster { break }
      entries = needed
    }
    let offset = start << UInt64(geometry.clusterBits)
    if let what = metadataOverlap(offset, length: count * clusterSize) {
      throw markCorrupt(at: offset, "free cluster \(hex(offset)) overlaps \(what) (refcount 0 on metadata)")
    }
    let old = HostRange(offset: refTableOffset, length: geometry.roundUp(UInt64(refTable.count) * 8))
    reserved.append(start..<start + count)
    defer { reserved.removeAll { $0 == start..<start + count } }
    refTable += [UInt64](repeating: 0, count: Int(count * perCluster) - refTable.count)
    refTableOffset = offset
    for cluster in start..<start + count { try updateRefcount(ofCluster: cluster, by: 1) }
    if old.offset == diskRefTable.offset {
      afterHeaderFrees.append(old)
    } else {
      try free(old)
    }
  }
}
