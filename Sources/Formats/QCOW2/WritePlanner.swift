import VDiskCore

/// What a prepared write does to one guest cluster.
struct ClusterWrite: Sendable {
  /// Guest offset of the cluster's first byte.
  var guestCluster: UInt64
  var l1Index: Int
  /// Index of the entry in its L2 table.
  var entryIndex: Int
  /// Host cluster the guest bytes go to (assigned after allocation when `isNew`).
  var host: UInt64
  /// The host cluster is newly allocated (refcount 1, linked at commit).
  var isNew: Bool
  /// First word of the L2 entry to store at commit (host offset is added for new clusters);
  /// nil when the entry keeps its first word.
  var newWord: UInt64?
  /// Units (subclusters, or the cluster) the guest bytes touch: marked allocated at commit.
  var touched: UInt32
  /// Units whose bytes the write does not cover are filled from the chain's current view.
  var fill: UInt32
  /// Units copied whole from the current view (allocated subclusters of a shared cluster).
  var copy: UInt32
  /// References the new entry drops (old shared or compressed cluster).
  var frees: [HostRange]
}

/// A write between `prepareWrite` and `commitWrite`/`abortWrite` (the `PreparedWrite` token).
struct PendingWrite: Sendable {
  var writes: [ClusterWrite]
  /// Host offset and count of the clusters allocated for it (freed again by an abort).
  var allocated: HostRange?
}

/// Deciding, per guest cluster, whether a write goes in place or to a new cluster, and with
/// which fill: QEMU's `handle_copied` (in place when the L2 entry's COPIED flag says refcount 1)
/// and `handle_alloc` (everything else: unallocated, zero, compressed, shared with a snapshot).
extension WriteState {
  static let copied = L2EntryDecoder.copiedFlag
  static let compressed = L2EntryDecoder.compressedFlag
  static let zeroFlag = L2EntryDecoder.zeroFlag
  static let offsetMask = L2EntryDecoder.offsetMask

  /// The L2 table for L1 entry `index`, made writable: allocated (zeroed) when missing, copied
  /// when shared with a snapshot (L1 COPIED flag clear). Returns its host offset.
  mutating func writableL2(l1Index index: Int) throws -> UInt64 {
    guard index < l1.count else {
      throw VDiskError.corrupt(path, "L1 index \(index) lies beyond the L1 table (\(l1.count) entries)")
    }
    let entry = l1[index]
    let old = entry & Self.offsetMask
    if old != 0 {
      guard old & (clusterSize - 1) == 0 else {
        throw markCorrupt(at: old, "L2 table offset \(hex(old)) (L1 index \(index)) is not cluster-aligned")
      }
      if let what = metadataOverlap(old, length: clusterSize, includingL2: false) {
        throw markCorrupt(at: old, "L2 table at \(hex(old)) (L1 index \(index)) overlaps \(what)")
      }
      if entry & Self.copied != 0 { return old }
    }
    let words =
      old != 0 ? try table(at: old) : [UInt64](repeating: 0, count: Int(clusterSize / 8))
    let fresh = try allocate(clusters: 1)
    // The copy is in the cache before the L1 entry names it, so readers always find a table.
    storeTable(words, at: fresh)
    setL1(index, fresh | Self.copied)
    l2Offsets.insert(fresh)
    if old != 0 {
      l2Offsets.remove(old)
      pendingFrees.append(HostRange(offset: old, length: clusterSize))
    }
    return fresh
  }

  /// Plans a write of guest bytes `[offset, end)` (inside the disk): makes the L2 tables
  /// writable, decides each cluster, and allocates new host clusters in one contiguous run.
  mutating func planWrite(from offset: UInt64, to end: UInt64) throws -> (
    writes: [ClusterWrite], allocated: HostRange?
  ) {
    try checkWritable()
    let g = geometry
    let clusterBits = UInt64(g.clusterBits)
    var writes: [ClusterWrite] = []
    var cluster = offset >> clusterBits
    while cluster << clusterBits < end {
      let guestCluster = cluster << clusterBits
      let l1Index = Int(cluster / g.l2Entries)
      let entryIndex = Int(cluster % g.l2Entries)
      let tableOffset = try writableL2(l1Index: l1Index)
      let words = try table(at: tableOffset)
      let word = entryIndex * g.wordsPerEntry
      let entry = words[word]
      let bitmap = g.extendedL2 ? words[word + 1] : 0
      let touched = touchedUnits(guestCluster: guestCluster, from: offset, to: end)
      var plan = ClusterWrite(
        guestCluster: guestCluster, l1Index: l1Index, entryIndex: entryIndex, host: 0, isNew: true,
        newWord: Self.copied, touched: touched, fill: touched, copy: 0, frees: [])
      try decide(&plan, entry: entry, bitmap: bitmap, tableOffset: tableOffset)
      writes.append(plan)
      cluster += 1
    }
    let newCount = UInt64(writes.count { $0.isNew })
    guard newCount > 0 else { return (writes, nil) }
    var host = try allocate(clusters: newCount)
    let first = host
    for i in writes.indices where writes[i].isNew {
      writes[i].host = host
      host += clusterSize
    }
    return (writes, HostRange(offset: first, length: newCount * clusterSize))
  }

  /// Units of the cluster at `guestCluster` that `[offset, end)` touches.
  func touchedUnits(guestCluster: UInt64, from offset: UInt64, to end: UInt64) -> UInt32 {
    guard geometry.extendedL2 else { return 1 }
    let unit = geometry.unitSize
    let first = (max(offset, guestCluster) - guestCluster) / unit
    let last = (min(end, guestCluster + clusterSize) - 1 - guestCluster) / unit
    let width = last - first + 1
    return (width >= 32 ? UInt32.max : (UInt32(1) << UInt32(width)) - 1) << UInt32(first)
  }

  /// Fills in `plan` (preset for a new cluster filled from the chain) from the current entry.
  private mutating func decide(_ plan: inout ClusterWrite, entry: UInt64, bitmap: UInt64, tableOffset: UInt64)
    throws
  {
    let g = geometry
    func corrupt(_ detail: String) -> VDiskError {
      markCorrupt(at: tableOffset, "\(detail) (L2 table at \(hex(tableOffset)), index \(plan.entryIndex))")
    }
    if entry & Self.compressed != 0 {
      // Compressed clusters have no subclusters: the new cluster gets all of them.
      let decoder = L2EntryDecoder(
        path: path, version: g.version, clusterBits: g.clusterBits, extendedL2: g.extendedL2,
        hasDataFile: false)
      let kind = try decoder.decode(
        entry: entry, bitmap: 0, subcluster: 0, guestCluster: plan.guestCluster, l2Offset: tableOffset,
        index: plan.entryIndex)
      if case .compressed(let hostOffset, let length) = kind {
        plan.frees = [HostRange(offset: hostOffset, length: UInt64(length))]
      }
      plan.fill = g.allUnits
      plan.touched = g.allUnits
      return
    }
    let host = entry & Self.offsetMask
    let isZero = !g.extendedL2 && g.version >= 3 && entry & Self.zeroFlag != 0
    let allocatedUnits = UInt32(truncatingIfNeeded: bitmap)
    guard host != 0 else {
      if g.extendedL2, allocatedUnits != 0 { throw corrupt("allocated subclusters without a host cluster") }
      return  // unallocated or plain zero: new cluster, filled from the chain (backing or zeros)
    }
    guard host & (clusterSize - 1) == 0 else {
      throw corrupt("host cluster \(hex(host)) is not cluster-aligned")
    }
    if let what = metadataOverlap(host, length: clusterSize) {
      throw corrupt("data cluster \(hex(host)) overlaps \(what)")
    }
    if entry & Self.copied != 0 {
      // qcow2 spec, "Standard Cluster Descriptor": COPIED means refcount exactly 1, so the write
      // goes in place without a refcount lookup (QEMU's handle_copied trusts the flag too).
      // In place. A preallocated zero cluster becomes data (its other bytes read as zeros);
      // with subclusters, only touched units not yet allocated need fill; without them the
      // cluster's other bytes are already its data (filling them cost a 60 KiB read and write
      // per 4 KiB write).
      plan.host = host
      plan.isNew = false
      plan.newWord = isZero ? host | Self.copied : nil
      plan.fill = isZero ? g.allUnits : g.extendedL2 ? plan.touched & ~allocatedUnits : 0
      return
    }
    // Shared with a snapshot (or a stale COPIED flag): copy to a new cluster, drop the old one.
    let references = try refcount(ofCluster: host >> UInt64(g.clusterBits))
    guard references > 0 else { throw corrupt("data cluster \(hex(host)) has refcount 0") }
    plan.frees = [HostRange(offset: host, length: clusterSize)]
    if g.extendedL2 {
      plan.copy = allocatedUnits & ~plan.touched
    } else {
      plan.fill = g.allUnits
    }
  }

  /// Links a prepared write: stores new L2 entries (extended L2: marks touched subclusters
  /// allocated, not zero) and queues the dropped references. Checks everything before changing
  /// anything, so a throw leaves the metadata as it was.
  mutating func commit(_ writes: [ClusterWrite]) throws {
    let g = geometry
    var tables: [Int: UInt64] = [:]
    for w in writes where tables[w.l1Index] == nil {
      let entry = w.l1Index < l1.count ? l1[w.l1Index] : 0
      let offset = entry & Self.offsetMask
      guard offset != 0, entry & Self.copied != 0 else {
        throw VDiskError.corrupt(path, "L2 table for L1 index \(w.l1Index) vanished before commit")
      }
      tables[w.l1Index] = offset
      _ = try table(at: offset)
    }
    var changes: [UInt64: [(word: Int, value: UInt64)]] = [:]
    for w in writes {
      guard let tableOffset = tables[w.l1Index] else { continue }
      let word = w.entryIndex * g.wordsPerEntry
      if let newWord = w.newWord {
        changes[tableOffset, default: []].append((word, newWord | (w.isNew ? w.host : 0)))
      }
      if g.extendedL2 {
        let bitmap = try table(at: tableOffset)[word + 1]
        let allocatedUnits = (UInt32(truncatingIfNeeded: bitmap) | w.touched | w.copy)
        let zeros = UInt32(truncatingIfNeeded: bitmap >> 32) & ~(w.touched | w.copy)
        let newBitmap = UInt64(zeros) << 32 | UInt64(allocatedUnits)
        if newBitmap != bitmap { changes[tableOffset, default: []].append((word + 1, newBitmap)) }
      }
    }
    for (tableOffset, list) in changes { try setWords(list, table: tableOffset) }
    for w in writes { pendingFrees += w.frees }
  }
}
