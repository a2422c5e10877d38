import Synchronization
import VDiskCore

/// The write side of a Parallels image opened read-write (`ParallelsWriteCheck` has vetted it).
/// Plans where guest bytes go and links new clusters; the engine (`LayerChain+Write.swift`)
/// holds the range locks and does all data I/O.
///
/// Allocation as QEMU's parallels driver does it: a new cluster goes at the end of the data area
/// and its BAT entry names it (in sectors or clusters, by the signature). Allocations run one at
/// a time (`allocation`, an `AllocationLock`, held from `prepareWrite` to `commitWrite`/`abortWrite`) so the end
/// moves only when a cluster is linked: an aborted allocation leaves nothing behind that the next
/// one does not overwrite. A new cluster's run covers the whole cluster, the rest filled with the
/// zeros the chain reads there. Writes into allocated clusters never take the lock.
///
/// in_use (parallels.txt, "in_use"): set (and synced) before the first change after the open or
/// after a flush, cleared (and synced) by a flush that leaves nothing dirty or in flight, which
/// also cuts the file back to the end of the data area, as QEMU's close does. So an image is
/// marked in use exactly while it may hold changes its BAT does not show.
///
/// Changed BAT pages stay dirty in the chain's `MetadataCache` and reach the file in `writeBack`
/// (`DataFirstWriteback`): `fdatasync` (the data of every linked cluster), the dirty pages,
/// `fdatasync`. A crash before
/// the pages land leaves clusters no entry names at the end of the file: a leak for
/// `qemu-img check`, never a wrong read.
final class ParallelsWriter: Sendable {
  let file: ImageFile
  let bat: ParallelsBAT
  let state: Mutex<ParallelsWriteState>
  /// The engine's range locks, one unit per cluster.
  let locks = RangeLocks()
  /// Held by the one allocation in flight.
  let allocation = AllocationLock()
  /// Data sync, BAT pages, sync; one at a time.
  let writeBacks: DataFirstWriteback
  /// in_use as this writer has set it, and the changes in flight.
  let inUse = Mutex(InUse())

  struct InUse {
    var isSet = false
    var inFlight = 0
  }

  /// Offset of in_use in the header (parallels.txt, "Header").
  static let inUseOffset: UInt64 = 44

  var cache: MetadataCache { bat.cache }
  var header: ParallelsHeader { bat.header }
  var clusterSize: UInt64 { header.clusterSize }

  init(file: ImageFile, bat: ParallelsBAT, dataEnd: UInt64) throws {
    guard file.isWritable else { throw VDiskError(.readOnly, path: file.path, "the image is open read-only") }
    self.file = file
    self.bat = bat
    state = Mutex(ParallelsWriteState(dataEnd: dataEnd))
    writeBacks = DataFirstWriteback(file: file)
  }

  // MARK: in_use

  private func begin() throws {
    try inUse.withLock { u in
      if !u.isSet {
        try Self.bytes(ParallelsHeader.inUseMagic).withUnsafeBytes {
          try file.write($0, at: Self.inUseOffset)
        }
        try file.dataSync()
        u.isSet = true
      }
      u.inFlight += 1
    }
  }

  private func end() { inUse.withLock { $0.inFlight -= 1 } }

  static func bytes(_ value: UInt32) -> [UInt8] {
    (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
  }

  // MARK: Two-phase writes

  /// Plans the write of guest bytes `[offset, offset + length)` (their clusters held by the
  /// engine): allocated clusters are written in place, the others get new clusters at the end of
  /// the data area.
  func prepareWrite(at offset: UInt64, length: UInt64) throws -> PreparedWrite {
    let (end, overflow) = offset.addingReportingOverflow(length)
    guard length > 0, !overflow, end <= header.virtualSize else {
      throw VDiskError(
        .invalidArgument, path: file.path, offset: offset,
        "write of \(length) bytes at \(hex(offset)) lies outside the disk (size \(hex(header.virtualSize)))")
    }
    try begin()
    do {
      let first = offset / clusterSize
      let last = (end - 1) / clusterSize
      let entries = try (first...last).map { try bat.entry($0) }
      let fresh = entries.filter { $0 == 0 }.count
      guard fresh > 0 else {
        let hosts = entries.map { bat.hostOffset($0) }
        return PreparedWrite(
          targets: targets(first: first, hosts: hosts, from: offset, to: end),
          token: allocation.inPlace([NewCluster]()))
      }
      let pending = try allocation.allocate {
        var next = state.withLock { $0.dataEnd }
        var clusters: [NewCluster] = []
        for (i, entry) in entries.enumerated() where entry == 0 {
          let unit = header.entryUnit * 512
          guard next / unit <= UInt64(UInt32.max) else {
            throw VDiskError(
              .noSpace, path: file.path,
              "the Parallels image is full: a cluster at \(hex(next)) cannot be named by a 32-bit BAT entry")
          }
          clusters.append(
            NewCluster(index: first + UInt64(i), entry: UInt32(next / unit), host: next))
          next += clusterSize
        }
        return clusters
      }
      var hosts = entries.map { bat.hostOffset($0) }
      for cluster in pending.plan { hosts[Int(cluster.index - first)] = cluster.host }
      let runs = targets(
        first: first, hosts: hosts, from: offset, to: end, fresh: Set(pending.plan.map(\.index)))
      return PreparedWrite(targets: runs, token: pending)
    } catch {
      self.end()
      throw error
    }
  }

  /// One run per cluster: the written part of an allocated cluster, or the whole of a new one
  /// with the rest filled.
  private func targets(
    first: UInt64, hosts: [UInt64], from offset: UInt64, to end: UInt64, fresh: Set<UInt64> = []
  ) -> [WriteTarget] {
    hosts.enumerated().map { i, host in
      let cluster = first + UInt64(i)
      return .unit(
        cluster * clusterSize..<(cluster + 1) * clusterSize, at: host, in: file, writing: offset..<end,
        isNew: fresh.contains(cluster))
    }
  }

  /// Links the clusters a prepared write allocated (their data is written), then writes back if
  /// dirty pages passed three quarters of the cache's budget.
  func commitWrite(_ prepared: PreparedWrite) throws {
    guard let pending = prepared.token as? PendingAllocation<[NewCluster]> else { return }
    var settled = false
    defer { if settled { end() } }
    let linked = try allocation.commit(pending) { clusters in
      settled = true
      guard !clusters.isEmpty else { return }
      try state.withLock { s in try link(clusters, in: &s) }
    }
    guard linked, !pending.plan.isEmpty else { return }
    try writeBack(ifOverBudget: true)
  }

  /// Forgets a prepared write whose data write failed: its clusters were never linked, and the
  /// next allocation takes the same places.
  func abortWrite(_ prepared: PreparedWrite) {
    guard let pending = prepared.token as? PendingAllocation<[NewCluster]> else { return }
    if allocation.abort(pending) { end() }
  }

  /// Sets the BAT entries of `clusters` in copies of their cached pages, inserted dirty. Pages
  /// are loaded first, so a failed load changes nothing.
  private func link(_ clusters: [NewCluster], in s: inout ParallelsWriteState) throws {
    var pages: [Int: [UInt64]] = [:]
    for cluster in clusters {
      let page = Int(cluster.index) / bat.table.pageEntries
      if pages[page] == nil { pages[page] = try bat.table.words(page: page) }
    }
    for cluster in clusters {
      let page = Int(cluster.index) / bat.table.pageEntries
      pages[page]?[Int(cluster.index) - page * bat.table.pageEntries] = UInt64(cluster.entry)
      s.dataEnd = max(s.dataEnd, cluster.host + clusterSize)
    }
    for (page, words) in pages {
      cache.insert(bat.table.key(page: page), words, cost: words.count * 8, dirty: true)
      s.dirtyPages.mark(page)
    }
  }

  // MARK: Discard, flush, resize

  /// Clusters not allocated already read as zeros (a single image has no parent). Allocated ones
  /// are handed back to be overwritten with zeros (QEMU's parallels driver does not discard).
  func discard(at offset: UInt64, length: UInt64, mode: DiscardMode) throws -> [Range<UInt64>] {
    let end = min(offset + length, header.virtualSize)
    guard offset < end else { return [] }
    var leftovers: [Range<UInt64>] = []
    var position = offset
    while position < end {
      let cluster = position / clusterSize
      let clusterEnd = min(end, (cluster + 1) * clusterSize)
      if try bat.entry(cluster) != 0 { leftovers.appendJoining(position..<clusterEnd) }
      position = clusterEnd
    }
    return leftovers
  }

  /// Writes everything back and syncs; then, with nothing dirty or in flight, cuts the file back
  /// to the end of the data area and clears in_use (synced).
  func flush() throws {
    try writeBack()
    try inUse.withLock { u in
      guard u.isSet, u.inFlight == 0 else { return }
      let (dirty, dataEnd) = state.withLock { ($0.hasDirtyMetadata, $0.dataEnd) }
      guard !dirty else { return }
      if file.size > dataEnd { try file.setSize(dataEnd) }
      try Self.bytes(0).withUnsafeBytes { try file.write($0, at: Self.inUseOffset) }
      try file.dataSync()
      u.isSet = false
    }
  }

  /// qemu cannot resize Parallels images either (the driver has no truncate).
  func resize(to newSize: UInt64, allowShrink: Bool) throws {
    guard newSize != header.virtualSize else { return }
    throw VDiskError.unsupported(
      file.path, "resizing Parallels images is not supported (qemu-img resize cannot resize them either)")
  }
}

/// Everything the writer changes, behind `ParallelsWriter.state`: where the data area ends and
/// which BAT pages are dirty. The pages themselves live in the chain's cache.
struct ParallelsWriteState {
  /// Where the next new cluster goes.
  var dataEnd: UInt64
  /// Dirty BAT pages by number.
  var dirtyPages = DirtySet<Int, Void>()

  var hasDirtyMetadata: Bool { !dirtyPages.isEmpty }
}

/// A cluster a prepared write allocated: its index in the BAT, the entry naming it, and where it
/// starts in the file.
struct NewCluster: Sendable {
  var index: UInt64
  var entry: UInt32
  var host: UInt64
}
