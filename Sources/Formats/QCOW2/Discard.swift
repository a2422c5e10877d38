import VDiskCore

/// Discard (punch hole / zero range): whole clusters (or, with extended L2 entries, whole
/// subclusters) become zero in the L2 entry and drop their host cluster where allowed; the
/// partial edges go back to the engine, which writes zeros through `prepareWrite`. The engine
/// holds the range's clusters and hands over bounded rounds of a large discard.
extension QCOW2Writer {
  func discard(at offset: UInt64, length: UInt64, mode: DiscardMode) throws -> [Range<UInt64>] {
    let size = virtualSize
    guard length > 0, offset < size else { return [] }
    let end = min(size, offset + length)
    let (unit, version, hasBacking) = state.withLock {
      ($0.geometry.unitSize, $0.geometry.version, $0.geometry.hasBacking)
    }
    // qcow2 spec, "Standard Cluster Descriptor": version 2 has no zero flag; only "unallocated"
    // reads as zeros, and only without a backing file.
    if version < 3, hasBacking { return [offset..<end] }
    let start = (offset + unit - 1) / unit * unit
    // The unit holding the end of the disk counts as whole.
    let stop = end == size ? (end + unit - 1) / unit * unit : end / unit * unit
    guard start < stop else { return [offset..<end] }
    var leftovers: [Range<UInt64>] = []
    if offset < start { leftovers.append(offset..<min(start, end)) }
    if stop < end { leftovers.append(stop..<end) }
    let more = try state.withLock { s in try s.discard(from: start, to: stop, mode: mode) }
    try writeBack(ifOverBudget: true)
    return (leftovers + more.map { $0.clamped(to: offset..<end) }).filter { !$0.isEmpty }.sorted {
      $0.lowerBound < $1.lowerBound
    }
  }
}

extension WriteState {
  /// Zeroes the whole units of `[offset, end)` (unit-aligned, the end possibly rounded past the
  /// disk's end). Returns ranges it could not zero (parts of compressed clusters).
  mutating func discard(from offset: UInt64, to end: UInt64, mode: DiscardMode) throws -> [Range<UInt64>] {
    try checkWritable()
    let g = geometry
    let clusterBits = UInt64(g.clusterBits)
    var leftovers: [Range<UInt64>] = []
    var cluster = offset >> clusterBits
    while cluster << clusterBits < end {
      let guestCluster = cluster << clusterBits
      let l1Index = Int(cluster / g.l2Entries)
      guard l1Index < l1.count else { break }
      if l1[l1Index] & Self.offsetMask == 0, !g.hasBacking {
        // No table and no backing: the whole table's range already reads as zeros.
        cluster = (cluster / g.l2Entries + 1) * g.l2Entries
        continue
      }
      let mask = touchedUnits(guestCluster: guestCluster, from: offset, to: end)
      if let rest = try discardCluster(guestCluster, units: mask, mode: mode) { leftovers.append(rest) }
      cluster += 1
    }
    return leftovers
  }

  /// Makes `units` of one cluster read as zeros. Returns the cluster's range when it is
  /// compressed and only partly discarded (the engine then writes zeros).
  private mutating func discardCluster(_ guestCluster: UInt64, units: UInt32, mode: DiscardMode) throws
    -> Range<UInt64>?
  {
    let g = geometry
    let cluster = guestCluster >> UInt64(g.clusterBits)
    let l1Index = Int(cluster / g.l2Entries)
    let word = Int(cluster % g.l2Entries) * g.wordsPerEntry
    let current = try l2Table(l1Index: l1Index)
    let entry = current?.words[word] ?? 0
    let bitmap = g.extendedL2 ? current?.words[word + 1] ?? 0 : 0
    let host = entry & Self.offsetMask
    var newEntry = entry
    var newBitmap = bitmap
    var frees: [HostRange] = []

    if entry & Self.compressed != 0 {
      guard units == g.allUnits else { return guestCluster..<guestCluster + clusterSize }
      let decoder = L2EntryDecoder(
        path: path, version: g.version, clusterBits: g.clusterBits, extendedL2: g.extendedL2,
        hasDataFile: false)
      if case .compressed(let hostOffset, let length) = try decoder.decode(
        entry: entry, bitmap: 0, subcluster: 0, guestCluster: guestCluster, l2Offset: current?.offset ?? 0,
        index: word / g.wordsPerEntry)
      {
        frees.append(HostRange(offset: hostOffset, length: UInt64(length)))
      }
      newEntry = !g.extendedL2 && g.hasBacking ? Self.zeroFlag : 0
      newBitmap = g.extendedL2 && g.hasBacking ? UInt64(UInt32.max) << 32 : 0
    } else if g.extendedL2 {
      let allocatedUnits = UInt32(truncatingIfNeeded: bitmap) & ~units
      var zeros = UInt32(truncatingIfNeeded: bitmap >> 32)
      zeros = g.hasBacking ? zeros | units : zeros & ~units
      newBitmap = UInt64(zeros) << 32 | UInt64(allocatedUnits)
      if host != 0, allocatedUnits == 0, mode == .punchHole || entry & Self.copied == 0 {
        frees.append(HostRange(offset: host, length: clusterSize))
        newEntry = 0
      }
    } else {
      let keep = mode == .zeroRange && host != 0 && entry & Self.copied != 0 && g.version >= 3
      if host != 0, !keep { frees.append(HostRange(offset: host, length: clusterSize)) }
      if keep {
        newEntry = host | Self.copied | Self.zeroFlag
      } else {
        newEntry = g.version >= 3 && g.hasBacking ? Self.zeroFlag : 0
      }
    }
    guard newEntry != entry || newBitmap != bitmap else { return nil }
    for range in frees where range.offset & (clusterSize - 1) == 0 && range.length == clusterSize {
      if let what = metadataOverlap(range.offset, length: clusterSize) {
        throw markCorrupt(at: range.offset, "data cluster \(hex(range.offset)) overlaps \(what)")
      }
    }
    let tableOffset = try writableL2(l1Index: l1Index)
    try setWords(
      g.extendedL2 ? [(word, newEntry), (word + 1, newBitmap)] : [(word, newEntry)], table: tableOffset)
    pendingFrees += frees
    return nil
  }
}
