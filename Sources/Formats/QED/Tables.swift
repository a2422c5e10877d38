import Synchronization
import VDiskCore

/// What one L2 entry says about a guest cluster (qed_spec.txt, "Data cluster offsets").
enum QEDCluster: Equatable {
  /// 0: not allocated; the backing file answers (zeros without one).
  case unallocated
  /// 1: reads as zeros, whatever the backing file holds.
  case zero
  /// A data cluster at this host offset.
  case data(UInt64)
}

/// The L1 table (resident: the entries the disk uses) and the L2 tables (read in pages into the
/// chain's `MetadataCache`) of a QED image, with the spec's rules for their offsets. Nothing here
/// reads guest data.
final class QEDTables: Sendable {
  /// qed_spec.txt, "Data cluster offsets": 1 marks a zero cluster.
  static let zeroEntry: UInt64 = 1
  /// Entries per cached L2 page (64 KiB; a table smaller than that is one page).
  static let maxPageEntries: UInt64 = 8192
  /// Cache kind of L2 pages.
  static let l2Kind: UInt8 = 1

  let file: ImageFile
  let header: QEDHeader
  let cache: MetadataCache
  /// The L1 entries the disk uses, as the writer has linked them.
  let l1: QEDActiveL1
  /// The disk's size: the header's, until a resize grows it (after growing `l1`).
  let size: Atomic<UInt64>

  var clusterSize: UInt64 { UInt64(header.clusterSize) }
  var pageEntries: UInt64 { min(header.tableEntries, Self.maxPageEntries) }

  init(file: ImageFile, header: QEDHeader, cache: MetadataCache) throws {
    self.file = file
    self.header = header
    self.cache = cache
    let entries = try file.readTable(
      of: UInt64.self, at: header.l1Offset, count: Int(header.l1EntriesNeeded), order: .littleEndian,
      what: "QED L1 table")
    l1 = QEDActiveL1(entries)
    size = Atomic(header.imageSize)
  }

  var virtualSize: UInt64 { size.load(ordering: .acquiring) }

  /// The L1 index and L2 index of guest byte `offset` (qed_spec.txt, "Logical offset
  /// translation").
  func indices(_ offset: UInt64) -> (l1: Int, l2: UInt64) {
    let cluster = offset >> header.clusterBits
    return (Int(cluster / header.tableEntries), cluster % header.tableEntries)
  }

  /// The L2 table offset of L1 entry `index` (`index < l1EntriesNeeded`), nil when unallocated,
  /// after checking it (qed_spec.txt: cluster-aligned; the whole table after the header and
  /// inside the file).
  func l2Offset(_ index: Int) throws -> UInt64? {
    let entry = l1[index]
    guard entry != 0 else { return nil }
    let (end, overflow) = entry.addingReportingOverflow(header.tableBytes)
    guard entry % clusterSize == 0, entry >= header.headerBytes, !overflow, end <= file.size else {
      throw VDiskError.corrupt(
        file.path, at: header.l1Offset + UInt64(index) * 8,
        "QED L1 entry \(index) names an L2 table at \(hex(entry)) that is not cluster-aligned or lies outside the file (size \(hex(file.size)))"
      )
    }
    return entry
  }

  /// Where page `page` of the L2 table at `table` starts.
  func pageOffset(table: UInt64, page: UInt64) -> UInt64 { table + page * pageEntries * 8 }

  func key(table: UInt64, page: UInt64) -> TableKey {
    TableKey(file: file, offset: pageOffset(table: table, page: page), kind: Self.l2Kind)
  }

  /// Page `page` of the L2 table at `table` (a checked offset), from the cache or the file.
  func page(table: UInt64, page: UInt64) throws -> [UInt64] {
    let n = Int(pageEntries)
    let offset = pageOffset(table: table, page: page)
    let words = try cache.value(for: key(table: table, page: page), cost: n * 8) {
      try file.readTable(of: UInt64.self, at: offset, count: n, order: .littleEndian, what: "QED L2 table")
    }
    guard words.count == n else {
      throw VDiskError.corrupt(file.path, at: offset, "QED L2 table page at \(hex(offset)) is short")
    }
    return words
  }

  /// The raw L2 entry of guest cluster `l2` in the table at `table`.
  func entry(table: UInt64, index l2: UInt64) throws -> UInt64 {
    try page(table: table, page: l2 / pageEntries)[Int(l2 % pageEntries)]
  }

  /// Decodes an L2 entry, checking a data cluster's offset (qed_spec.txt: cluster-aligned, after
  /// the header, inside the file). `table` and `index` name the entry in messages.
  func decode(_ entry: UInt64, table: UInt64, index: UInt64) throws -> QEDCluster {
    switch entry {
    case 0: return .unallocated
    case Self.zeroEntry: return .zero
    default:
      guard entry % clusterSize == 0, entry >= header.headerBytes, entry < file.size else {
        throw VDiskError.corrupt(
          file.path, at: table + index * 8,
          "QED L2 entry \(index) of the table at \(hex(table)) names a data cluster at \(hex(entry)) that is not cluster-aligned or lies outside the file (size \(hex(file.size)))"
        )
      }
      return .data(entry)
    }
  }

  /// How guest cluster `offset / clusterSize` is stored.
  func cluster(at offset: UInt64) throws -> QEDCluster {
    let (l1Index, l2Index) = indices(offset)
    guard let table = try l2Offset(l1Index) else { return .unallocated }
    return try decode(try entry(table: table, index: l2Index), table: table, index: l2Index)
  }
}
