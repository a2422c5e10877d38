import Synchronization
import VDiskCore

/// The write side of a QED layer opened read-write (`QEDWriteCheck` has vetted every table).
/// Plans where guest bytes go and links new clusters; the engine (`LayerChain+Write.swift`) holds
/// the range locks and does all data I/O.
///
/// Allocation as QEMU does it (qed_spec.txt, "Unallocated L2 tables and data clusters"): a write
/// to an unallocated or zero cluster gets a new data cluster at the end of the file, filled with
/// what the chain reads there (the backing file's bytes, or zeros), and a new L2 table, also at
/// the end of the file, when its L1 entry has none. Clusters are never freed or reused. The file
/// end only grows, so an aborted or interrupted allocation leaks space and never hands a cluster
/// out twice. Allocations are serialized from `prepareWrite` to `commitWrite`/`abortWrite` by
/// `allocation`, an `AllocationLock` (two writes under one missing L2 table must not both create
/// it); writes into allocated clusters never take it.
///
/// QED_F_NEED_CHECK (qed_spec.txt, "Consistency checking") is set in the header before the first
/// allocating write and cleared by `flush` once every change is on disk (the engine has no
/// separate close: unmount and close flush), as QEMU clears it when idle and on close.
/// Changed L2 pages stay dirty in the chain's cache and changed L1 entries in `state` until
/// `writeBack` (`Writeback.swift`) writes them after the data.
final class QEDWriter: Sendable {
  let tables: QEDTables
  let hasBacking: Bool
  let state: Mutex<QEDWriteState>
  /// The engine's range locks, one unit per cluster.
  let locks = RangeLocks()
  /// Held by the one allocation in flight, and by a flush clearing the need-check flag.
  let allocation = AllocationLock()
  /// Data sync, L2 pages and L1 entries, sync; one at a time.
  let writeBacks: DataFirstWriteback

  var file: ImageFile { tables.file }
  var header: QEDHeader { tables.header }
  var cache: MetadataCache { tables.cache }
  var clusterSize: UInt64 { tables.clusterSize }

  init(tables: QEDTables, hasBacking: Bool) throws {
    guard tables.file.isWritable else {
      throw VDiskError(.readOnly, path: tables.file.path, "the image is open read-only")
    }
    self.tables = tables
    self.hasBacking = hasBacking
    // New clusters start at the first cluster boundary at or past the end of the file (a
    // partial cluster at the end is left alone).
    let size = tables.file.size
    let end = (size + tables.clusterSize - 1) / tables.clusterSize * tables.clusterSize
    state = Mutex(QEDWriteState(fileEnd: end, needCheckOnDisk: tables.header.features.contains(.needCheck)))
    writeBacks = DataFirstWriteback(file: tables.file)
  }

  // MARK: Two-phase writes

  /// Plans the write of guest bytes `[offset, offset + length)` (their clusters held by the
  /// engine): allocated clusters are written in place; unallocated and zero clusters get new
  /// clusters at the end of the file, written whole.
  func prepareWrite(at offset: UInt64, length: UInt64) throws -> PreparedWrite {
    let (end, overflow) = offset.addingReportingOverflow(length)
    guard length > 0, !overflow, end <= tables.virtualSize else {
      throw VDiskError(
        .invalidArgument, path: file.path, offset: offset,
        "write of \(length) bytes at \(hex(offset)) lies outside the disk (size \(hex(tables.virtualSize)))")
    }
    let first = offset / clusterSize
    let last = (end - 1) / clusterSize
    let kinds = try (first...last).map { try tables.cluster(at: $0 * clusterSize) }
    let fresh = kinds.indices.filter { if case .data = kinds[$0] { false } else { true } }
    guard !fresh.isEmpty else {
      return PreparedWrite(targets: targets(first: first, kinds: kinds, from: offset, to: end))
    }
    let pending = try allocation.allocate {
      try setNeedCheck()
      var next = state.withLock { $0.fileEnd }
      var clusters: [NewCluster] = []
      for i in fresh {
        clusters.append(NewCluster(guestCluster: first + UInt64(i), host: next))
        next += clusterSize
      }
      // New L2 tables after the data, as QEMU allocates them; zeros on disk from now on, so
      // that lookups find them inside the file once linked.
      var newTables: [NewTable] = []
      for l1Index in Set(clusters.map { tables.indices($0.guestCluster * clusterSize).l1 }).sorted()
      where try tables.l2Offset(l1Index) == nil {
        newTables.append(NewTable(l1Index: l1Index, offset: next))
        try file.extendWithZeros(from: next, to: next + header.tableBytes)
        next += header.tableBytes
      }
      state.withLock { $0.fileEnd = next }
      return NewClusters(clusters: clusters, tables: newTables)
    }
    var assigned = kinds
    for cluster in pending.plan.clusters { assigned[Int(cluster.guestCluster - first)] = .data(cluster.host) }
    let new = Set(pending.plan.clusters.map(\.guestCluster))
    return PreparedWrite(
      targets: targets(first: first, kinds: assigned, from: offset, to: end, fresh: new), token: pending)
  }

  /// One run per cluster: the written part of an allocated cluster, or the whole of a new one with
  /// the rest filled from the chain (which still shows the old mapping).
  private func targets(
    first: UInt64, kinds: [QEDCluster], from offset: UInt64, to end: UInt64, fresh: Set<UInt64> = []
  ) -> [WriteTarget] {
    kinds.enumerated().compactMap { i, kind in
      guard case .data(let host) = kind else { return nil }
      let cluster = first + UInt64(i)
      return .unit(
        cluster * clusterSize..<(cluster + 1) * clusterSize, at: host, in: file, writing: offset..<end,
        isNew: fresh.contains(cluster))
    }
  }

  /// Links what a prepared write allocated (its data is written): new L2 tables' pages first, then
  /// their L1 entries, so that a reader never follows an entry to a table without them.
  func commitWrite(_ prepared: PreparedWrite) throws {
    guard let pending = prepared.token as? PendingAllocation<NewClusters>,
      try allocation.commit(pending, link: link)
    else { return }
    try writeBack(ifOverBudget: true)
  }

  /// Forgets a prepared write whose data write failed: its clusters and tables are leaked (the
  /// file end never moves back).
  func abortWrite(_ prepared: PreparedWrite) {
    guard let pending = prepared.token as? PendingAllocation<NewClusters> else { return }
    allocation.abort(pending)
  }

  private func link(_ pending: NewClusters) throws {
    let tableOf = Dictionary(uniqueKeysWithValues: pending.tables.map { ($0.l1Index, $0.offset) })
    // Load every page first, so that a failed load changes nothing.
    var pages: [UInt64: (table: UInt64, page: UInt64, words: [UInt64])] = [:]
    var placed: [(pageOffset: UInt64, slot: Int, host: UInt64)] = []
    for cluster in pending.clusters {
      let (l1Index, l2Index) = tables.indices(cluster.guestCluster * clusterSize)
      guard let table = try tableOf[l1Index] ?? tables.l2Offset(l1Index) else {
        throw VDiskError.corrupt(file.path, "QED L1 entry \(l1Index) lost its L2 table during a write")
      }
      let page = l2Index / tables.pageEntries
      let pageOffset = tables.pageOffset(table: table, page: page)
      if pages[pageOffset] == nil {
        pages[pageOffset] = (table, page, try tables.page(table: table, page: page))
      }
      placed.append((pageOffset, Int(l2Index % tables.pageEntries), cluster.host))
    }
    for p in placed { pages[p.pageOffset]?.words[p.slot] = p.host }
    state.withLock { s in
      for (pageOffset, page) in pages {
        cache.insert(
          tables.key(table: page.table, page: page.page), page.words, cost: page.words.count * 8, dirty: true)
        s.dirtyPages.mark(pageOffset, (page.table, page.page))
      }
      for table in pending.tables {
        tables.l1.set(table.l1Index, to: table.offset)
        s.dirtyL1.mark(table.l1Index)
      }
    }
  }

  // MARK: Discard, flush, resize

  /// Clusters that already read as zeros in this layer (zero clusters; unallocated ones without a
  /// backing file) need nothing; everything else is handed back to be overwritten with zeros.
  /// Marking an allocated cluster zero would leak it (QED never frees clusters), which `qemu-img
  /// check` reports.
  func discard(at offset: UInt64, length: UInt64, mode: DiscardMode) throws -> [Range<UInt64>] {
    let end = min(offset + length, tables.virtualSize)
    var leftovers: [Range<UInt64>] = []
    var position = offset
    while position < end {
      let clusterEnd = min(end, (position / clusterSize + 1) * clusterSize)
      switch try tables.cluster(at: position) {
      case .zero: break
      case .unallocated where !hasBacking: break
      default: leftovers.appendJoining(position..<clusterEnd)
      }
      position = clusterEnd
    }
    return leftovers
  }

  /// Writes every change back in order, then clears QED_F_NEED_CHECK when nothing is left dirty
  /// or in flight.
  func flush() throws {
    try writeBack()
    try clearNeedCheck()
  }

  /// Grows the disk as QEMU's QED truncate does: a new image_size in the header, nothing else
  /// (L2 tables and clusters come with writes). L1 entries the disk did not use before and now
  /// does are zeroed first, on disk, where a hostile or old image left something there (they
  /// mapped nothing the guest could see, and the open check did not vouch for them). Shrinking
  /// is refused, as QEMU refuses it. Called with every unit held.
  func resize(to newSize: UInt64, allowShrink: Bool) throws {
    let current = tables.virtualSize
    guard newSize != current else { return }
    guard newSize > current else {
      throw VDiskError.unsupported(
        file.path, "shrinking QED images is not supported (QEMU cannot shrink them either)")
    }
    guard header.isValidSize(newSize) else {
      throw VDiskError(.invalidArgument, path: file.path, "QED image size \(newSize) \(header.sizeRule)")
    }
    let old = tables.l1.count
    let new = Int(header.l1Entries(for: newSize))
    if new > old {
      let at = header.l1Offset + UInt64(old) * 8
      let found = try file.readTable(
        of: UInt64.self, at: at, count: new - old, order: .littleEndian, what: "QED L1 table")
      if found.contains(where: { $0 != 0 }) {
        try write([UInt64](repeating: 0, count: new - old), at: at)
      }
      tables.l1.append(zeros: new - old)
    }
    try file.dataSync()
    try write([newSize], at: QEDHeader.imageSizeOffset)
    try file.dataSync()
    tables.size.store(newSize, ordering: .releasing)
  }
}

/// Everything the writer changes, behind `QEDWriter.state`. The L2 pages themselves live in the
/// chain's cache, the L1 entries in `QEDTables.l1`.
struct QEDWriteState {
  /// Where the next cluster or table goes.
  var fileEnd: UInt64
  /// Whether the header on disk has QED_F_NEED_CHECK set.
  var needCheckOnDisk: Bool
  /// Dirty L2 pages by file offset, with their table's offset and page number in it.
  var dirtyPages = DirtySet<UInt64, (table: UInt64, page: UInt64)>()
  /// Dirty L1 entries by index.
  var dirtyL1 = DirtySet<Int, Void>()

  var hasDirtyMetadata: Bool { !dirtyPages.isEmpty || !dirtyL1.isEmpty }
}

/// A data cluster a prepared write allocated: its guest cluster number and host offset.
struct NewCluster: Sendable {
  var guestCluster: UInt64
  var host: UInt64
}

/// An L2 table a prepared write allocated for L1 entry `l1Index`.
struct NewTable: Sendable {
  var l1Index: Int
  var offset: UInt64
}

/// What a prepared write allocated: its data clusters and the L2 tables they needed (the plan of
/// its `PendingAllocation`).
struct NewClusters: Sendable {
  var clusters: [NewCluster]
  var tables: [NewTable]
}
