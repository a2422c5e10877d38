import VDiskCore

/// Writing dirty tables back, in this order (crash safety: a crash at any point leaves at worst
/// leaked clusters, which `qemu-img check` reports as leaks, never as corruption):
///
/// 1. `fdatasync`: new data clusters, the zeros of new L2 tables (the file was extended over
///    them when they were allocated) and the need-check flag are durable before any entry names
///    them;
/// 2. dirty L2 pages (entries naming new data clusters);
/// 3. dirty L1 entries (naming new L2 tables), one write per run of neighbouring entries;
/// 4. `fdatasync`.
///
/// Steps 2 and 3 need no sync between them: a new table is all zeros on disk after step 1, so an
/// L1 entry that lands before its table's entries names a table of unallocated entries (its
/// clusters leak), never garbage. QEMU writes data, then the L2 table, then the L1 entry, and
/// relies on the need-check flag for the rest; here the order alone keeps the tables consistent.
extension QEDWriter {
  struct Snapshot {
    var pages: [(dirty: DirtySet<UInt64, (table: UInt64, page: UInt64)>.Entry, words: [UInt64])]
    var l1: [(dirty: DirtySet<Int, Void>.Entry, value: UInt64)]
  }

  /// Whether dirty pages cost more than three quarters of the cache's budget.
  func isOverBudget(_ s: QEDWriteState) -> Bool {
    !s.dirtyPages.isEmpty && cache.isMostlyDirty
  }

  /// Writes dirty metadata back (see above; `DataFirstWriteback` runs steps 1 and 4), one
  /// write-back at a time, never syncing under the writer's mutex. With nothing dirty, one
  /// `fdatasync`. `ifOverBudget`: only when dirty pages passed three quarters of the cache's
  /// budget, else nothing.
  func writeBack(ifOverBudget: Bool = false) throws {
    if ifOverBudget, !state.withLock({ isOverBudget($0) }) { return }
    try writeBacks.run(
      syncIfClean: !ifOverBudget,
      take: {
        try state.withLock { s -> Snapshot? in
          guard ifOverBudget ? isOverBudget(s) : s.hasDirtyMetadata else { return nil }
          var pages: [(dirty: DirtySet<UInt64, (table: UInt64, page: UInt64)>.Entry, words: [UInt64])] = []
          for dirty in s.dirtyPages.sorted {
            let (offset, page) = (dirty.key, dirty.detail)
            guard let words = cache.get(tables.key(table: page.table, page: page.page)) else {
              throw VDiskError(
                .io, path: file.path, offset: offset,
                "dirty QED L2 page at \(hex(offset)) left the cache unwritten")
            }
            pages.append((dirty, words))
          }
          let dirty = s.dirtyL1.sorted
          let values = tables.l1.values(dirty.map(\.key))
          let l1 = zip(dirty, values).map { (dirty: $0, value: $1) }
          return Snapshot(pages: pages, l1: l1)
        }
      },
      write: { snapshot in
        try cache.writingBack {
          for page in snapshot.pages { try write(page.words, at: page.dirty.key) }
        }
        try writeL1(snapshot.l1)
      },
      written: { snapshot in
        state.withLock { s in
          for page in snapshot.pages where s.dirtyPages.clean(page.dirty) {
            cache.markClean(tables.key(table: page.dirty.detail.table, page: page.dirty.detail.page))
          }
          for entry in snapshot.l1 { s.dirtyL1.clean(entry.dirty) }
        }
      })
  }

  /// Step 3: runs of neighbouring L1 entries, one write each.
  private func writeL1(_ entries: [(dirty: DirtySet<Int, Void>.Entry, value: UInt64)]) throws {
    var i = 0
    while i < entries.count {
      var j = i + 1
      while j < entries.count, entries[j].dirty.key == entries[j - 1].dirty.key + 1 { j += 1 }
      try write(entries[i..<j].map(\.value), at: header.l1Offset + UInt64(entries[i].dirty.key) * 8)
      i = j
    }
  }

  /// Writes `words` little-endian at `offset`.
  func write(_ words: [UInt64], at offset: UInt64) throws {
    let bytes = words.map { $0.littleEndian }
    try bytes.withUnsafeBytes { try file.write($0, at: offset) }
  }

  /// Sets QED_F_NEED_CHECK in the header before an allocating write (call with `allocation`
  /// held). Not synced here: the first step of the next write-back syncs it before any table
  /// changes.
  func setNeedCheck() throws {
    guard !state.withLock({ $0.needCheckOnDisk }) else { return }
    try write([header.features.union(.needCheck).rawValue], at: QEDHeader.featuresOffset)
    state.withLock { $0.needCheckOnDisk = true }
  }

  /// Clears QED_F_NEED_CHECK once everything is on disk: no dirty tables, no allocation in
  /// flight (`allocation` is taken, so none can start).
  func clearNeedCheck() throws {
    try allocation.excludingAllocations {
      guard state.withLock({ $0.needCheckOnDisk && !$0.hasDirtyMetadata }) else { return }
      try write([header.features.subtracting(.needCheck).rawValue], at: QEDHeader.featuresOffset)
      try file.dataSync()
      state.withLock { $0.needCheckOnDisk = false }
    }
  }
}
