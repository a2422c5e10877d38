import Synchronization
import VDiskCore

/// Dirty metadata as it was when a write-back began.
///
/// Order (docs/DESIGN.md, "Metadata, the cache, and the write-back order", applied to VHD):
/// 1. `fdatasync`: the data of every linked write, and each new block's bitmap and the footer
///    after it, are durable before anything names them;
/// 2. the changed sector bitmaps, then the BAT pages (a bit is set, and an entry names a block,
///    only over data already on disk), `fdatasync`.
/// A crash before 2 completes leaves every block and bit as it was or as it is now, each over
/// durable data; new blocks whose entries did not make it are leaked space at the end of the
/// file. The footer at the end is always valid (`VHDWriteState.allocateBlock`), and the footer
/// copy at offset 0 never changes (nothing it holds changes while writing).
struct VHDWriteBackPlan: Sendable {
  var bitmaps: [(offset: UInt64, words: [UInt64])] = []
  var pages: [(page: Int, offset: UInt64, words: [UInt64])] = []
}

extension VHDWriteState {
  /// Whether dirty entries cost more than three quarters of the cache's budget (as for qcow2):
  /// then a commit writes everything back.
  func isOverBudget(_ cache: MetadataCache) -> Bool {
    hasDirtyMetadata && cache.isMostlyDirty
  }

  /// Snapshots the dirty bitmaps and BAT pages (under the mutex); they count as clean from here
  /// on unless changed again.
  mutating func beginWriteBack(table: VHDBlockTable) throws -> VHDWriteBackPlan {
    var plan = VHDWriteBackPlan()
    for offset in dirtyBitmaps.sorted() { plan.bitmaps.append((offset, try table.bitmap(at: offset))) }
    for page in dirtyPages.sorted() {
      plan.pages.append((page, table.pageOffset(page), try table.pageWords(page)))
    }
    dirtyBitmaps = []
    dirtyPages = []
    return plan
  }

  /// After the snapshot is written: entries not changed since may leave the cache.
  func written(_ plan: VHDWriteBackPlan, table: VHDBlockTable) {
    for bitmap in plan.bitmaps where !dirtyBitmaps.contains(bitmap.offset) {
      table.cache.markClean(table.bitmapKey(bitmap.offset))
    }
    for page in plan.pages where !dirtyPages.contains(page.page) {
      table.cache.markClean(table.pageKey(page.page))
    }
  }

  /// After a failed write-back: the snapshot's entries are dirty again.
  mutating func restore(_ plan: VHDWriteBackPlan) {
    for bitmap in plan.bitmaps { dirtyBitmaps.insert(bitmap.offset) }
    for page in plan.pages { dirtyPages.insert(page.page) }
  }
}

extension VHDWriter {
  /// Writes dirty metadata back in order (see `VHDWriteBackPlan`), one write-back at a time, with
  /// the writer's mutex held only to snapshot and to mark entries clean, never across an
  /// `fdatasync`. With nothing dirty, one `fdatasync`. `ifOverBudget`: only when dirty entries
  /// passed three quarters of the cache's budget (after a commit), else nothing.
  func writeBack(ifOverBudget: Bool = false) throws {
    guard let table else {
      if !ifOverBudget { try file.dataSync() }
      return
    }
    let cache = table.cache
    if ifOverBudget, !state.withLock({ $0.isOverBudget(cache) }) { return }
    try writeBacks.withLock { _ in
      let plan = try state.withLock { s -> VHDWriteBackPlan? in
        guard ifOverBudget ? s.isOverBudget(cache) : s.hasDirtyMetadata else { return nil }
        return try s.beginWriteBack(table: table)
      }
      guard let plan else {
        if !ifOverBudget { try file.dataSync() }
        return
      }
      do {
        try file.dataSync()
        try cache.writingBack {
          for bitmap in plan.bitmaps {
            try bitmap.words.bigEndianBytes.withUnsafeBytes { try file.write($0, at: bitmap.offset) }
          }
          for page in plan.pages {
            try page.words.batEntryBytes.withUnsafeBytes { try file.write($0, at: page.offset) }
          }
        }
        state.withLock { s in s.written(plan, table: table) }
        try file.dataSync()
      } catch {
        state.withLock { s in s.restore(plan) }
        throw error
      }
    }
  }
}
