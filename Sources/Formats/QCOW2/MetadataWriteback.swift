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
/// Writers go on while this runs: stage 1 happens under the writer's mutex and takes a snapshot
/// of the dirty L2 tables, the L1 entries and the dropped references as they are then; the later
/// stages write that snapshot (whose clusters stage 1 made durable) with the mutex released, and
/// no `fdatasync` ever runs under it. A table changed again meanwhile stays dirty for the next
/// write-back. Write-backs themselves are serialized (`QCOW2Writer.writeBack`).
///
/// Dirty tables live in the chain's cache and count against its budget; when they pass three
/// quarters of it (after a commit or a discard) the whole sequence runs, which is what writing back a dirty L2
/// table needs first anyway (QEMU's cache dependency of L2 tables on refcount blocks), and leaves
/// every table clean and evictable.
struct WriteBackPlan {
  /// A relocated refcount table the header must name (stage 2).
  var refTableHeader: (offset: UInt64, clusters: Int)?
  /// Dirty L2 tables as they were at stage 1 (stage 3).
  var tables: [(offset: UInt64, words: [UInt64])] = []
  /// A relocated L1 table, written whole then named by the header (stage 4) ...
  var l1Relocated: (offset: UInt64, words: [UInt64], bytes: Int)?
  /// ... or dirty runs of L1 entries, written in place.
  var l1Runs: [(offset: UInt64, words: [UInt64])] = []
  var l1Indices: Set<Int> = []
  /// References dropped by the tables above, decremented in stage 5.
  var frees: [HostRange] = []
}

extension WriteState {
  var hasDirtyMetadata: Bool {
    !dirtyBlocks.isEmpty || !dirtyRefTable.isEmpty || refTableOffset != diskRefTable.offset
      || !dirtyL2.isEmpty || !dirtyL1.isEmpty || l1Offset != diskL1.offset || !pendingFrees.isEmpty
      || !afterHeaderFrees.isEmpty
  }

  /// Stage 1 (under the mutex): writes the refcount blocks and table, and takes the snapshot the
  /// later stages write. A relocated table counts as the one on disk from here on, so that a
  /// relocation during the later stages queues it for freeing instead of freeing it at once.
  mutating func beginWriteBack() throws -> WriteBackPlan {
    var plan = WriteBackPlan()
    try writeRefcounts()
    if refTableOffset != diskRefTable.offset {
      let clusters = Int(geometry.roundUp(UInt64(refTable.count) * 8) / clusterSize)
      plan.refTableHeader = (refTableOffset, clusters)
      diskRefTable = (refTableOffset, clusters)
    }
    for offset in dirtyL2.sorted() {
      plan.tables.append((offset, try dirtyTable(offset, kind: QCOW2TableKind.l2)))
    }
    dirtyL2 = []
    if l1Offset != diskL1.offset {
      plan.l1Relocated = (l1Offset, l1, Int(geometry.roundUp(UInt64(l1.count) * 8)))
      diskL1 = (l1Offset, l1.count)
    } else {
      plan.l1Runs = dirtyL1.runs.map { (l1Offset + UInt64($0.lowerBound) * 8, Array(l1[$0])) }
    }
    plan.l1Indices = dirtyL1
    dirtyL1 = []
    plan.frees = pendingFrees + afterHeaderFrees
    pendingFrees = []
    afterHeaderFrees = []
    return plan
  }

  /// After stage 3: the snapshot's tables are on disk; those not changed since are clean.
  func tablesWritten(_ plan: WriteBackPlan) {
    for table in plan.tables where !dirtyL2.contains(table.offset) {
      cache.markClean(TableKey(file: file, offset: table.offset, kind: QCOW2TableKind.l2))
    }
  }

  /// Stage 5 (under the mutex): drops the snapshot's references and writes the refcounts;
  /// returns whether anything was written (to sync).
  mutating func finishWriteBack(_ plan: WriteBackPlan) throws -> Bool {
    for range in plan.frees { try free(range) }
    guard !dirtyBlocks.isEmpty || !dirtyRefTable.isEmpty else { return false }
    try writeRefcounts()
    return true
  }

  /// After a failed stage: what the snapshot held is dirty again (written again next time), and
  /// its dropped references wait for that.
  mutating func restore(_ plan: WriteBackPlan) {
    for table in plan.tables { dirtyL2.insert(table.offset) }
    if plan.l1Relocated == nil { dirtyL1.formUnion(plan.l1Indices) }
    pendingFrees += plan.frees
  }

  /// Whether dirty tables cost more than three quarters of the cache's budget (the rest stays for
  /// tables readers use): then the writer writes everything back. The default budget covers every
  /// L2 table of the image and a quarter more for refcount blocks, so an image whose tables all
  /// fit is written back only when asked (fsync, close, unmount).
  var isOverBudget: Bool {
    cache.isMostlyDirty && hasDirtyMetadata
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

  /// Writes dirty refcount blocks, then the refcount table (whole when relocated, else its
  /// dirty entries).
  mutating func writeRefcounts() throws {
    for offset in dirtyBlocks.sorted() {
      let block = try dirtyTable(offset, kind: QCOW2TableKind.refcountBlock)
      try block.withUnsafeBytes { try file.write($0, at: offset) }
      cache.markClean(blockKey(offset))
    }
    dirtyBlocks = []
    if refTableOffset != diskRefTable.offset {
      try file.writeWords(refTable[...], at: refTableOffset)
    } else {
      for run in dirtyRefTable.runs {
        try file.writeWords(refTable[run], at: refTableOffset + UInt64(run.lowerBound) * 8)
      }
    }
    dirtyRefTable = []
  }

}

extension QCOW2Writer {
  /// Writes dirty metadata back in order (see `WriteBackPlan`), one write-back at a time, with the
  /// writer's mutex held only for stage 1, for marking tables clean and for stage 5, and never
  /// across an `fdatasync`. With nothing dirty, one `fdatasync`. `ifOverBudget`: only when dirty
  /// metadata passed three quarters of the cache's budget (after a commit or discard), else nothing.
  func writeBack(ifOverBudget: Bool = false) throws {
    // After every commit: a look under the metadata mutex alone, so that a commit never waits for
    // a write-back (and its syncs) that another thread is running.
    if ifOverBudget, !state.withLock({ $0.isOverBudget }) { return }
    try writeBacks.withLock { _ in
      let plan = try state.withLock { s -> WriteBackPlan? in
        guard ifOverBudget ? s.isOverBudget : s.hasDirtyMetadata else { return nil }
        return try s.beginWriteBack()
      }
      guard let plan else {
        if !ifOverBudget { try file.dataSync() }
        return
      }
      do {
        try file.dataSync()
        if let header = plan.refTableHeader {
          try file.writeHeaderField(.refcountTableOffset, header.offset)
          try file.writeHeaderField(.refcountTableClusters, UInt64(header.clusters))
          try file.dataSync()
        }
        if !plan.tables.isEmpty {
          try cache.writingBack {
            for table in plan.tables { try file.writeWords(table.words[...], at: table.offset) }
          }
          state.withLock { s in s.tablesWritten(plan) }
          try file.dataSync()
        }
        if let l1 = plan.l1Relocated {
          try file.writeWords(l1.words[...], at: l1.offset, paddedTo: l1.bytes)
          try file.dataSync()
          try file.writeHeaderField(.l1TableOffset, l1.offset)
          try file.writeHeaderField(.l1Size, UInt64(l1.words.count))
        } else {
          for run in plan.l1Runs { try file.writeWords(run.words[...], at: run.offset) }
        }
        try file.dataSync()
      } catch {
        state.withLock { s in s.restore(plan) }
        throw error
      }
      if try state.withLock({ s in try s.finishWriteBack(plan) }) { try file.dataSync() }
    }
  }
}
