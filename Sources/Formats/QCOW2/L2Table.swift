import VDiskCore

/// How one guest cluster (or subcluster) is stored, decoded from its L2 entry. Codec only: no I/O.
enum ClusterKind: Equatable {
  /// Not in this layer (the backing layer answers).
  case unallocated
  /// Reads as zeros (plain, or with a preallocated host cluster).
  case zero
  /// Stored raw at this host offset (of the first byte of the cluster or subcluster).
  case data(hostOffset: UInt64)
  /// Stored compressed: `hostOffset` and an upper bound on its compressed length.
  case compressed(hostOffset: UInt64, length: Int)
}

extension ClusterKind: RunPiece {
  var rawHostOffset: UInt64? {
    if case .data(let host) = self { return host }
    return nil
  }

  var mergesWhenEqual: Bool { self == .zero || self == .unallocated }
}

/// Decodes L2 entries (qcow2 spec, "Cluster mapping", "Extended L2 Entries").
struct L2EntryDecoder: Sendable {
  /// qcow2 spec, "L1 table entry" / "Standard Cluster Descriptor": bits 9–55 hold the offset.
  static let offsetMask: UInt64 = 0x00FF_FFFF_FFFF_FE00
  /// Bit 62: compressed cluster.
  static let compressedFlag: UInt64 = 1 << 62
  /// Bit 63: refcount is exactly one ("copied"); with an external data file it also marks host
  /// offset 0 as allocated.
  static let copiedFlag: UInt64 = 1 << 63
  /// Bit 0 of a standard descriptor: reads as zeros (version 3 without extended L2 only).
  static let zeroFlag: UInt64 = 1

  let path: String
  let version: UInt32
  let clusterBits: UInt32
  let extendedL2: Bool
  let hasDataFile: Bool

  var clusterSize: UInt64 { 1 << UInt64(clusterBits) }

  /// Decodes the entry of the guest cluster at `guestCluster` (its first guest byte) and, with
  /// extended L2 entries, the status of subcluster `subcluster` from `bitmap`. `l2Offset` and
  /// `index` only serve error messages.
  func decode(
    entry: UInt64, bitmap: UInt64, subcluster: Int, guestCluster: UInt64, l2Offset: UInt64, index: Int
  ) throws -> ClusterKind {
    func corrupt(_ detail: String) -> VDiskError {
      VDiskError.corrupt(path, at: l2Offset, "\(detail) (L2 table at \(hex(l2Offset)), index \(index))")
    }
    if entry & Self.compressedFlag != 0 {
      // qcow2 spec, "External data file bit": compressed clusters are not supported there.
      guard !hasDataFile else { throw corrupt("compressed cluster in an image with an external data file") }
      // qcow2 spec, "Compressed Clusters Descriptor": x = 62 - (cluster_bits - 8).
      let x = 62 - (UInt64(clusterBits) - 8)
      let hostOffset = entry & ((1 << x) - 1)
      let additionalSectors = (entry >> x) & ((1 << (62 - x)) - 1)
      let length = (additionalSectors + 1) * 512 - (hostOffset & 511)
      return .compressed(hostOffset: hostOffset, length: Int(length))
    }
    let hostCluster = entry & Self.offsetMask
    // Offset 0 means unallocated, except that with an external data file host offset 0 is valid
    // and marked by the copied flag (qcow2 spec, "Standard Cluster Descriptor").
    let hasHostCluster = hostCluster != 0 || (hasDataFile && entry & Self.copiedFlag != 0)

    if extendedL2 {
      // qcow2 spec, "Subcluster Allocation Bitmap": bits 0–31 allocated, 32–63 reads as zeros.
      let allocated = UInt32(truncatingIfNeeded: bitmap)
      let zeros = UInt32(truncatingIfNeeded: bitmap >> 32)
      guard allocated & zeros == 0 else { throw corrupt("subcluster both allocated and zero") }
      if !hasHostCluster {
        guard allocated == 0 else { throw corrupt("allocated subclusters without a host cluster") }
        return zeros & (1 << UInt32(subcluster)) != 0 ? .zero : .unallocated
      }
      try checkHostCluster(hostCluster, guestCluster: guestCluster, corrupt)
      if zeros & (1 << UInt32(subcluster)) != 0 { return .zero }
      if allocated & (1 << UInt32(subcluster)) != 0 {
        return .data(hostOffset: hostCluster + UInt64(subcluster) << (UInt64(clusterBits) - 5))
      }
      return .unallocated
    }

    if entry & Self.zeroFlag != 0 {
      // qcow2 spec: "With version 2 … this is always 0"; QEMU fails such reads as corruption.
      guard version >= 3 else { throw corrupt("zero cluster entry in a version 2 image") }
      if hasHostCluster { try checkHostCluster(hostCluster, guestCluster: guestCluster, corrupt) }
      return .zero
    }
    guard hasHostCluster else { return .unallocated }
    try checkHostCluster(hostCluster, guestCluster: guestCluster, corrupt)
    return .data(hostOffset: hostCluster)
  }

  private func checkHostCluster(
    _ hostCluster: UInt64, guestCluster: UInt64, _ corrupt: (String) -> VDiskError
  ) throws {
    guard hostCluster & (clusterSize - 1) == 0 else {
      throw corrupt("host cluster offset \(hex(hostCluster)) is not cluster-aligned")
    }
    // qcow2 spec, "External data file bit": the offset must match the guest offset.
    guard !hasDataFile || hostCluster == guestCluster else {
      throw corrupt(
        "external data file offset \(hex(hostCluster)) does not match guest cluster offset \(hex(guestCluster))"
      )
    }
  }
}

/// Loading of L2 tables into the chain's shared metadata cache as native 64-bit words.
extension ImageFile {
  /// The L2 table at `offset`: from `cache` (where a writer keeps its dirty tables too), else read
  /// and cached. The one L2 lookup of readers and the writer.
  func l2Table(at offset: UInt64, clusterSize: Int, cache: MetadataCache) throws -> [UInt64] {
    try cache.value(for: TableKey(file: self, offset: offset, kind: QCOW2TableKind.l2), cost: clusterSize) {
      try readL2Table(at: offset, clusterSize: clusterSize)
    }
  }

  /// The L2 table of one cluster at `offset`, big-endian words converted to native order.
  func readL2Table(at offset: UInt64, clusterSize: Int) throws -> [UInt64] {
    try readTable(of: UInt64.self, at: offset, count: clusterSize / 8, order: .bigEndian, what: "L2 table")
  }
}

/// `TableKey.kind`s of qcow2 tables in the chain's cache (a hostile image may put two kinds of
/// table at one offset).
enum QCOW2TableKind {
  static let l2: UInt8 = 0
  /// Refcount blocks, as raw big-endian bytes in 64-bit words (writers only).
  static let refcountBlock: UInt8 = 1
}
