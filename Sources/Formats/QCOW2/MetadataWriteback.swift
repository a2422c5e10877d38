import VDiskCore

/// Writing dirty metadata back in dependency order (QEMU's qcow2-cache "depends" rule, made
/// explicit as stages separated by `fdatasync`):
///
/// 1. refcount blocks, then the refcount table (a new block before the entry naming it), then
///    sync — every cluster a new L2 entry will name is now counted, and guest data the engine
///    wrote before `commitWrite` is durable;
/// 2. a relocated refcount table: the header fields naming it, sync;
/// 3. L2 tables, sync — new tables exist before an L1 entry names them;
/// 4. L1 entries (or a relocated L1 table, sync, then its header fields), sync;
/// 5. only now the references those tables dropped are decremented (and the old L1/refcount
///    tables freed), their refcount blocks written, sync.
///
/// A crash between any two steps leaves refcounts at or above the true count (leaked clusters at
/// worst), never an entry naming an uncounted or unwritten cluster.
///
/// Dirty tables live in the chain's cache and count against its budget; when they pass half of it
/// (`writeBackIfOverBudget`, after each commit and discard) the whole sequence runs, which is
/// what writing back a dirty L2 table needs first anyway (QEMU's cache dependency of L2 tables on
/// refcount blocks), and leaves every table clean and evictable.
extension WriteState {
  var hasDirtyMetadata: Bool {
    !dirtyBlocks.isEmpty || !dirtyRefTable.isEmpty || refTableOffset != diskRefTable.offset
      || !dirtyL2.isEmpty || !dirtyL1.isEmpty || l1Offset != diskL1.offset || !pendingFrees.isEmpty
      || !afterHeaderFrees.isEmpty
  }

  /// Writes everything back (the caller checked `hasDirtyMetadata`).
  mutating func writeBack() throws {
    try writeRefcounts()
    try file.dataSync()
    if refTableOffset != diskRefTable.offset {
      let clusters = Int(geometry.roundUp(UInt64(refTable.count) * 8) / clusterSize)
      try file.writeHeaderField(.refcountTableOffset, refTableOffset)
      try file.writeHeaderField(.refcountTableClusters, UInt64(clusters))
      try file.dataSync()
      diskRefTable = (refTableOffset, clusters)
    }

    if !dirtyL2.isEmpty {
      let offsets = dirtyL2.sorted()
      try cache.writingBack {
        for offset in offsets {
          try file.writeWords(try dirtyTable(offset, kind: QCOW2TableKind.l2)[...], at: offset)
        }
      }
      for offset in offsets { cache.markClean(TableKey(file: file, offset: offset, kind: QCOW2TableKind.l2)) }
      dirtyL2 = []
      try file.dataSync()
    }
    if l1Offset != diskL1.offset {
      try file.writeWords(l1[...], at: l1Offset, paddedTo: Int(geometry.roundUp(UInt64(l1.count) * 8)))
      try file.dataSync()
      try file.writeHeaderField(.l1TableOffset, l1Offset)
      try file.writeHeaderField(.l1Size, UInt64(l1.count))
      diskL1 = (l1Offset, l1.count)
      dirtyL1 = []
    } else {
      for run in Self.runs(of: dirtyL1) {
        try file.writeWords(l1[run], at: l1Offset + UInt64(run.lowerBound) * 8)
      }
      dirtyL1 = []
    }
    try file.dataSync()

    let frees = pendingFrees + afterHeaderFrees
    pendingFrees = []
    afterHeaderFrees = []
    for range in frees { try free(range) }
    if !dirtyBlocks.isEmpty || !dirtyRefTable.isEmpty {
      try writeRefcounts()
      try file.dataSync()
    }
  }

  /// Writes dirty refcount blocks, then the refcount table (whole when relocated, else its
  /// dirty entries).
  private mutating func writeRefcounts() throws {
    for offset in dirtyBlocks.sorted() {
      let block = try dirtyTable(offset, kind: QCOW2TableKind.refcountBlock)
      try block.withUnsafeBytes { try file.write($0, at: offset) }
      cache.markClean(blockKey(offset))
    }
    dirtyBlocks = []
    if refTableOffset != diskRefTable.offset {
      try file.writeWords(refTable[...], at: refTableOffset)
    } else {
      for run in Self.runs(of: dirtyRefTable) {
        try file.writeWords(refTable[run], at: refTableOffset + UInt64(run.lowerBound) * 8)
      }
    }
    dirtyRefTable = []
  }

  /// Writes everything back when dirty tables cost more than half the cache's budget (the other
  /// half stays for tables readers use).
  mutating func writeBackIfOverBudget() throws {
    guard cache.dirtyCost > cache.budget / 2, hasDirtyMetadata else { return }
    try writeBack()
  }

  /// The words of a dirty table (dirty entries are never evicted, so a miss is a bug, reported
  /// as an I/O error rather than a crash).
  private func dirtyTable(_ offset: UInt64, kind: UInt8) throws -> [UInt64] {
    guard let words = cache.get(TableKey(file: file, offset: offset, kind: kind)) else {
      throw VDiskError(
        .io, path: path, offset: offset, "dirty table at \(hex(offset)) left the cache unwritten")
    }
    return words
  }

  /// Consecutive runs of the indices in `set`, ascending.
  static func runs(of set: Set<Int>) -> [Range<Int>] {
    var result: [Range<Int>] = []
    for index in set.sorted() {
      if let last = result.last, last.upperBound == index {
        result[result.count - 1] = last.lowerBound..<index + 1
      } else {
        result.append(index..<index + 1)
      }
    }
    return result
  }
}
