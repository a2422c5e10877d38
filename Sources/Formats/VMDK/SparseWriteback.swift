import VDiskCore

/// A snapshot of one sparse extent's dirty metadata, taken under the writer's mutex and written
/// with it released.
struct SparseWriteBackPlan {
  /// Dirty grain tables: GD index, where the table and its redundant copy live, its entries.
  var tables: [(index: Int, offset: UInt64, redundant: UInt64?, words: [UInt64])] = []
  /// Runs of directory entries to write: first index and the primary and redundant values.
  var directory: [(first: Int, primary: [UInt32], redundant: [UInt32]?)] = []
  var directoryIndices: Set<Int> = []
}

extension SparseWriteState {
  /// Takes the snapshot of everything dirty and counts it as written (`restore` undoes that when
  /// the write-back fails).
  mutating func beginWriteBack() throws -> SparseWriteBackPlan {
    var plan = SparseWriteBackPlan()
    for index in dirtyTables.sorted() {
      let offset = UInt64(gd[index]) * 512
      guard let words = cache.get(key(offset)) else {
        throw VDiskError(
          .io, path: file.path, offset: offset, "dirty grain table at \(hex(offset)) left the cache unwritten"
        )
      }
      plan.tables.append((index, offset, rgd.map { UInt64($0[index]) * 512 }, words))
    }
    dirtyTables = []
    for run in dirtyDirectory.runs {
      plan.directory.append((run.lowerBound, Array(gd[run]), rgd.map { Array($0[run]) }))
    }
    plan.directoryIndices = dirtyDirectory
    dirtyDirectory = []
    return plan
  }

  /// After the tables are written: those not changed since are clean (evictable).
  func tablesWritten(_ plan: SparseWriteBackPlan) {
    for table in plan.tables where !dirtyTables.contains(table.index) {
      cache.markClean(key(table.offset))
    }
  }

  /// After a failed write-back: what the snapshot held is dirty again.
  mutating func restore(_ plan: SparseWriteBackPlan) {
    for table in plan.tables { dirtyTables.insert(table.index) }
    dirtyDirectory.formUnion(plan.directoryIndices)
  }

  /// Whether dirty tables cost more than three quarters of the cache's budget (the rest stays
  /// for tables readers use).
  var isOverBudget: Bool {
    cache.isMostlyDirty && hasDirtyMetadata
  }

}

/// Little-endian 32-bit words (grain tables and directories, vmdk spec "Grain table").
func littleEndianWords<S: Sequence>(_ words: S) -> [UInt8] where S.Element: BinaryInteger {
  var bytes: [UInt8] = []
  bytes.reserveCapacity(words.underestimatedCount * 4)
  for word in words {
    let value = UInt32(truncatingIfNeeded: word)
    bytes.append(UInt8(truncatingIfNeeded: value))
    bytes.append(UInt8(truncatingIfNeeded: value >> 8))
    bytes.append(UInt8(truncatingIfNeeded: value >> 16))
    bytes.append(UInt8(truncatingIfNeeded: value >> 24))
  }
  return bytes
}

extension SparseExtentWriter {
  /// Writes dirty metadata back in dependency order, one write-back at a time, never syncing
  /// under the writer's mutex:
  ///
  /// 1. `fdatasync`: grain data and fill the engine wrote before `commitWrite` are durable
  ///    before any grain table entry names them;
  /// 2. the dirty grain tables, each to its primary and its redundant place (same content), then
  ///    — when tables were created — `fdatasync`, so a new table is durable before a directory
  ///    entry names it;
  /// 3. the changed directory entries, primary and redundant, then `fdatasync`.
  ///
  /// A crash between any two steps leaves at worst grains or tables nothing names (leaked space),
  /// never an entry naming unwritten bytes. With nothing dirty: one `fdatasync` when data was
  /// written since the last one, else nothing. `ifOverBudget`: only when dirty tables passed
  /// three quarters of the cache's budget (after a commit or discard), else nothing.
  func writeBack(ifOverBudget: Bool = false) throws {
    if ifOverBudget, !state.withLock({ $0.isOverBudget }) { return }
    try writeBacks.withLock { _ in
      let plan = try state.withLock { s -> SparseWriteBackPlan? in
        guard ifOverBudget ? s.isOverBudget : s.hasDirtyMetadata else { return nil }
        return try s.beginWriteBack()
      }
      guard let plan else {
        if !ifOverBudget, dataWritten.exchange(false, ordering: .acquiringAndReleasing) {
          try file.dataSync()
        }
        return
      }
      dataWritten.store(false, ordering: .releasing)
      do {
        try file.dataSync()
        if !plan.tables.isEmpty {
          try cache.writingBack {
            for table in plan.tables {
              let bytes = littleEndianWords(table.words)
              try bytes.withUnsafeBytes { raw in
                try file.write(raw, at: table.offset)
                if let redundant = table.redundant { try file.write(raw, at: redundant) }
              }
            }
          }
          state.withLock { s in s.tablesWritten(plan) }
        }
        if !plan.directory.isEmpty {
          try file.dataSync()
          for run in plan.directory {
            let at = UInt64(run.first) * 4
            try littleEndianWords(run.primary).withUnsafeBytes {
              try file.write($0, at: layout.gdOffset + at)
            }
            if let words = run.redundant, let rgd = layout.rgdOffset {
              try littleEndianWords(words).withUnsafeBytes { try file.write($0, at: rgd + at) }
            }
          }
        }
        try file.dataSync()
      } catch {
        state.withLock { s in s.restore(plan) }
        dataWritten.store(true, ordering: .releasing)
        throw error
      }
    }
  }
}
