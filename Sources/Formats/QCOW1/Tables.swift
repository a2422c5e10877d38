import VDiskCore

/// How one guest cluster of a qcow v1 image is stored (qcow.asciidoc, "Cluster block reference –
/// version 1").
enum QCOW1Cluster: Equatable {
  /// 0: not in this image; the backing file answers (zeros without one).
  case unallocated
  /// Stored raw at this host offset.
  case data(UInt64)
  /// Stored deflate-compressed: where, and how many bytes.
  case compressed(offset: UInt64, length: Int)
}

/// The L1 table (resident) and L2 tables (whole, in the chain's `MetadataCache`) of a qcow v1
/// image. Nothing here reads guest data.
struct QCOW1Tables: Sendable {
  /// qcow.asciidoc: bit 63 (QCOW_OFLAG_COMPRESSED) marks a compressed cluster.
  static let compressedFlag: UInt64 = 1 << 63
  /// Cache kind of qcow v1 L2 tables.
  static let l2Kind: UInt8 = 1

  let file: ImageFile
  let header: QCOW1Header
  let cache: MetadataCache
  let l1: [UInt64]

  init(file: ImageFile, header: QCOW1Header, cache: MetadataCache) throws {
    self.file = file
    self.header = header
    self.cache = cache
    l1 = try file.readTable(
      of: UInt64.self, at: header.l1Offset, count: Int(header.l1Entries), order: .bigEndian,
      what: "qcow L1 table")
  }

  /// The L2 table of L1 entry `index` (nil when unallocated), read whole and cached.
  func l2Table(_ index: Int) throws -> (offset: UInt64, entries: [UInt64])? {
    let offset = l1[index]
    guard offset != 0 else { return nil }
    let count = Int(header.l2Entries)
    let (end, overflow) = offset.addingReportingOverflow(UInt64(count) * 8)
    guard offset & Self.compressedFlag == 0, !overflow, end <= file.size else {
      throw VDiskError.corrupt(
        file.path, at: header.l1Offset + UInt64(index) * 8,
        "qcow L1 entry \(index) names an L2 table at \(hex(offset)) that lies outside the file (size \(hex(file.size)))"
      )
    }
    let entries = try cache.value(
      for: TableKey(file: file, offset: offset, kind: Self.l2Kind), cost: count * 8
    ) {
      try file.readTable(of: UInt64.self, at: offset, count: count, order: .bigEndian, what: "qcow L2 table")
    }
    guard entries.count == count else {
      throw VDiskError.corrupt(file.path, at: offset, "qcow L2 table at \(hex(offset)) is short")
    }
    return (offset, entries)
  }

  /// How guest cluster `offset / clusterSize` is stored.
  func cluster(at offset: UInt64) throws -> QCOW1Cluster {
    let l1Index = Int(offset / header.l2Coverage)
    guard let (table, entries) = try l2Table(l1Index) else { return .unallocated }
    let index = Int((offset / header.clusterSize) % header.l2Entries)
    return try decode(entries[index], table: table, index: index)
  }

  /// Decodes an L2 entry (qcow.asciidoc, "Compressed chunk data block – version 1": the
  /// compressed size sits above bit 63 - cluster_bits, masked to less than a cluster as QEMU
  /// masks it; the offset below).
  func decode(_ entry: UInt64, table: UInt64, index: Int) throws -> QCOW1Cluster {
    guard entry != 0 else { return .unallocated }
    let clusterSize = header.clusterSize
    func corrupt(_ detail: String) -> VDiskError {
      VDiskError.corrupt(
        file.path, at: table + UInt64(index) * 8,
        "qcow L2 entry \(index) of the table at \(hex(table)) \(detail)")
    }
    if entry & Self.compressedFlag != 0 {
      let shift = 63 - UInt64(header.clusterBits)
      let offset = entry & ((1 << shift) - 1)
      let length = (entry >> shift) & (clusterSize - 1)
      guard length > 0, offset < file.size else {
        throw corrupt("names a compressed cluster of \(length) bytes at \(hex(offset)) outside the file")
      }
      return .compressed(offset: offset, length: Int(length))
    }
    let (end, overflow) = entry.addingReportingOverflow(clusterSize)
    guard !overflow, end <= 1 << 63 else { throw corrupt("names a cluster at \(hex(entry)) past any file") }
    return .data(entry)
  }
}
