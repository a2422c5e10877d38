import VDiskCore

/// Writing dirty BAT pages back: `fdatasync` (the data of every linked cluster, and the size of
/// the file grown for them, is durable before any entry names it), each dirty page in place,
/// `fdatasync`. One write-back at a time; no sync under the writer's mutex.
extension ParallelsWriter {
  /// Whether dirty pages cost more than three quarters of the cache's budget.
  func isOverBudget(_ s: ParallelsWriteState) -> Bool {
    !s.dirtyPages.isEmpty && cache.isMostlyDirty
  }

  /// Writes dirty pages back (see above; `DataFirstWriteback` runs the steps). With nothing
  /// dirty, one `fdatasync`. `ifOverBudget`: only when dirty pages passed three quarters of the
  /// cache's budget, else nothing.
  func writeBack(ifOverBudget: Bool = false) throws {
    if ifOverBudget, !state.withLock({ isOverBudget($0) }) { return }
    try writeBacks.run(
      syncIfClean: !ifOverBudget,
      take: {
        try state.withLock { s -> [(dirty: DirtySet<Int, Void>.Entry, words: [UInt64])]? in
          guard ifOverBudget ? isOverBudget(s) : s.hasDirtyMetadata else { return nil }
          return try s.dirtyPages.sorted.map { dirty in
            let page = dirty.key
            guard let words = cache.get(bat.table.key(page: page)) else {
              throw VDiskError(
                .io, path: file.path, offset: bat.table.pageOffset(page),
                "dirty Parallels BAT page at \(hex(bat.table.pageOffset(page))) left the cache unwritten")
            }
            return (dirty, words)
          }
        }
      },
      write: { pages in
        try cache.writingBack {
          for page in pages {
            try bat.table.encode(page.words).withUnsafeBytes {
              try file.write($0, at: bat.table.pageOffset(page.dirty.key))
            }
          }
        }
      },
      written: { pages in
        state.withLock { s in
          for page in pages where s.dirtyPages.clean(page.dirty) {
            cache.markClean(bat.table.key(page: page.dirty.key))
          }
        }
      })
  }
}
