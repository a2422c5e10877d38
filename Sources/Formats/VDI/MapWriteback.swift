import VDiskCore

/// Writing dirty map pages and cBlocksAllocated back, in this order:
///
/// 1. `fdatasync`: the data of every linked block (and the size of a file extended for new
///    slots) is durable before any entry names it (vdi.md, "Writing (dynamic images)": data
///    first, then the map, then the header);
/// 2. one `pwrite` of the bytes from cBlocksAllocated (header offset 0x184) to the end of the
///    last dirty page, rebuilt from the file with the new count and the dirty pages laid over it;
/// 3. `fdatasync`.
///
/// `qemu-img check` of a vdi counts as corruption any difference between cBlocksAllocated and
/// the number of allocated entries (there is no "leak" for vdi), so the count and the entries
/// must change together: hence one write for both, not qemu's map-then-header (vdi.md, "Block
/// map"). A crash before that write leaves the old map and count and at worst blocks written
/// past the last slot in use (reused by the next allocation); after it, the new ones. The write
/// is one system call; a kill -9 cannot split the part of it that lies in one 4 KiB page, which
/// holds the header and, in qemu's layout, the first 960 entries.
extension VDIWriter {
  /// A write-back's view of the dirty metadata, taken under the writer's mutex.
  struct Snapshot {
    var linked: UInt32
    var pages: [(dirty: DirtySet<Int, Void>.Entry, words: [UInt64])]
  }

  /// Whether dirty pages cost more than three quarters of the cache's budget.
  func isOverBudget(_ s: VDIWriteState) -> Bool {
    !s.dirtyPages.isEmpty && cache.isMostlyDirty
  }

  /// Writes dirty metadata back (see above; `DataFirstWriteback` runs the steps), one write-back
  /// at a time, never syncing under the writer's mutex. With nothing dirty, one `fdatasync`.
  /// `ifOverBudget`: only when dirty pages passed three quarters of the cache's budget, else
  /// nothing.
  func writeBack(ifOverBudget: Bool = false) throws {
    if ifOverBudget, !state.withLock({ isOverBudget($0) }) { return }
    try writeBacks.run(
      syncIfClean: !ifOverBudget,
      take: {
        try state.withLock { s -> Snapshot? in
          guard ifOverBudget ? isOverBudget(s) : s.hasDirtyMetadata else { return nil }
          var pages: [(dirty: DirtySet<Int, Void>.Entry, words: [UInt64])] = []
          for dirty in s.dirtyPages.sorted {
            let page = dirty.key
            guard let words = cache.get(map.key(page: page)) else {
              throw VDiskError(
                .io, path: file.path, offset: map.pageOffset(page),
                "dirty VDI block map page at \(hex(map.pageOffset(page))) left the cache unwritten")
            }
            pages.append((dirty, words))
          }
          return Snapshot(linked: s.linked, pages: pages)
        }
      },
      write: writeMap,
      written: { snapshot in
        state.withLock { s in
          s.diskLinked = snapshot.linked
          for page in snapshot.pages where s.dirtyPages.clean(page.dirty) {
            cache.markClean(map.key(page: page.dirty.key))
          }
        }
      })
  }

  /// Step 2: the count and the dirty pages in one write (the bytes between them as the file
  /// holds them: the rest of the header, any gap before the map, clean pages).
  private func writeMap(_ snapshot: Snapshot) throws {
    let start = VDIWriteCheck.countOffset
    var end = start + 4
    if let last = snapshot.pages.last {
      end = map.pageOffset(last.dirty.key) + UInt64(map.pageLength(last.dirty.key)) * 4
    }
    var bytes = try file.readBytes(at: start, count: Int(end - start), what: "VDI header and block map")
    store(snapshot.linked, into: &bytes, at: 0)
    for page in snapshot.pages {
      let base = Int(map.pageOffset(page.dirty.key) - start)
      for (i, word) in page.words.enumerated() {
        store(UInt32(truncatingIfNeeded: word), into: &bytes, at: base + i * 4)
      }
    }
    try cache.writingBack {
      try bytes.withUnsafeBytes { try file.write($0, at: start) }
    }
  }

  private func store(_ value: UInt32, into bytes: inout [UInt8], at offset: Int) {
    for i in 0..<4 { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> UInt32(8 * i)) }
  }
}
