import VDiskCore

/// Writing dirty metadata back through the log (MS-VHDX 2.3; vhdx-notes "Log" and "Writing
/// through the log"). One write-back takes a snapshot of every changed 4 KiB metadata sector
/// under the mutex, then, with it released:
///
/// 1. `fdatasync`: guest data in new blocks (written by the engine before `commitWrite`), and the
///    file's extension over them, are durable before any entry that maps them is logged;
/// 2. one log entry per batch of sectors at byte 0 of the log (LogGuid = the header's, set at
///    open), `fdatasync`;
/// 3. the batch written in place, `fdatasync`;
/// 4. the entry's first sector overwritten with zeros so that nobody replays it again (not
///    synced: replaying an applied entry is harmless, and the next write-back's first sync
///    makes it durable).
///
/// A crash before step 2's sync leaves the old metadata (the entry is torn or absent: its CRC
/// fails); after it, a replay (ours, Hyper-V's, `qemu-img check -r all`) writes the new metadata
/// whether or not step 3 finished. The log is overwritten only after its entry is in place.
/// Sectors changed again after the snapshot stay dirty for the next write-back; a page is marked
/// clean in the cache once none of its sectors is dirty.
extension VHDXWriter {
  /// Whether dirty pages cost more than three quarters of the cache's budget (as qcow2).
  var isOverBudget: Bool { cache.isMostlyDirty }

  /// Writes back every changed sector; with nothing changed, one `fdatasync` (none when
  /// `ifOverBudget`, which writes back only when over budget).
  func writeBack(ifOverBudget: Bool = false) throws {
    if ifOverBudget, !isOverBudget { return }
    try writeBacks.withLock { _ in
      let snapshot = try state.withLock { s -> (sectors: [(offset: UInt64, bytes: [UInt8])], size: UInt64) in
        guard !s.dirtySectors.isEmpty else { return ([], 0) }
        let sectors = try s.dirtySectors.sorted().map { (offset: $0, bytes: try s.sectorBytes($0)) }
        s.dirtySectors = []
        return (sectors, file.size)
      }
      guard !snapshot.sectors.isEmpty else {
        if !ifOverBudget { try file.dataSync() }
        return
      }
      do {
        try file.dataSync()
        let perEntry = max(1, LogWriter.maxSectors(logLength: logLength))
        var start = 0
        while start < snapshot.sectors.count {
          let batch = Array(snapshot.sectors[start..<min(start + perEntry, snapshot.sectors.count)])
          try log(batch, fileSize: snapshot.size)
          start += batch.count
        }
        try LogWriter.emptySector.withUnsafeBytes { try file.write($0, at: logOffset) }
      } catch {
        state.withLock { s in s.dirtySectors.formUnion(snapshot.sectors.map(\.offset)) }
        throw error
      }
      state.withLock { s in
        var pages = Set<TableKey>()
        for sector in snapshot.sectors { pages.insert(s.pageKey(ofSector: sector.offset)) }
        for sector in s.dirtySectors { pages.remove(s.pageKey(ofSector: sector)) }
        for key in pages { cache.markClean(key) }
      }
    }
  }

  /// Steps 2 and 3 for one batch: the entry, synced, then its sectors in place, synced.
  private func log(_ batch: [(offset: UInt64, bytes: [UInt8])], fileSize: UInt64) throws {
    guard LogWriter.maxSectors(logLength: logLength) > 0 else {
      throw VDiskError(.io, path: file.path, "the VHDX log is too short to hold an entry")
    }
    let sequence = state.withLock { s in
      s.sequence &+= 1
      if s.sequence == 0 { s.sequence = 1 }
      return s.sequence
    }
    let entry = LogWriter.entry(
      sequence: sequence, logGuid: logGuid, sectors: batch, flushedFileOffset: fileSize,
      lastFileOffset: fileSize)
    try entry.withUnsafeBytes { try file.write($0, at: logOffset) }
    try file.dataSync()
    // Consecutive sectors go out as one write.
    var runs: [(offset: UInt64, bytes: [UInt8])] = []
    for sector in batch {
      if let last = runs.last, last.offset + UInt64(last.bytes.count) == sector.offset {
        runs[runs.count - 1].bytes += sector.bytes
      } else {
        runs.append(sector)
      }
    }
    try cache.writingBack {
      for run in runs { try run.bytes.withUnsafeBytes { try file.write($0, at: run.offset) } }
    }
    try file.dataSync()
  }
}
