import VDiskCore

/// The Parallels BAT (parallels.txt, "BAT"): one little-endian u32 per cluster, zero for a
/// cluster not allocated, else where the cluster starts, in sectors ("WithoutFreeSpace") or in
/// clusters ("WithouFreSpacExt"). Pages of it live in the chain's `MetadataCache`
/// (`PagedTable`); a writer keeps the pages it changed there dirty until it writes them back.
struct ParallelsBAT: Sendable {
  /// The cache's table kind for BAT pages.
  static let tableKind: UInt8 = 0x50

  let table: PagedTable
  let header: ParallelsHeader

  init(file: ImageFile, cache: MetadataCache, header: ParallelsHeader) {
    self.header = header
    table = PagedTable(
      file: file, cache: cache, offset: UInt64(ParallelsHeader.size), count: Int(header.batEntries),
      order: .littleEndian, kind: Self.tableKind, name: "Parallels BAT")
  }

  var file: ImageFile { table.file }
  var cache: MetadataCache { table.cache }

  /// The entry of cluster `index`, or 0 (not allocated) past the BAT: QEMU reads clusters the
  /// BAT does not cover as zeros. (The header checked that the whole BAT lies in the file.)
  func entry(_ index: UInt64) throws -> UInt32 {
    guard index < UInt64(table.count) else { return 0 }
    return UInt32(truncatingIfNeeded: try table.entry(Int(index)))
  }

  /// Where in the file the cluster of BAT entry `entry` (non-zero) starts.
  func hostOffset(_ entry: UInt32) -> UInt64 { UInt64(entry) * header.entryUnit * 512 }

  /// Where cluster `index` (entry `entry`, non-zero) starts in the file, after checking that the
  /// part of it the disk uses lies inside the file.
  func dataOffset(cluster index: UInt64, entry: UInt32) throws -> UInt64 {
    let host = hostOffset(entry)
    let start = index * header.clusterSize
    let used = min(header.clusterSize, header.virtualSize > start ? header.virtualSize - start : 0)
    guard host <= file.size, used <= file.size - host else {
      throw VDiskError.corrupt(
        file.path, at: UInt64(ParallelsHeader.size) + index * 4,
        "Parallels cluster \(index) at \(hex(host)) lies beyond end of file (size \(hex(file.size)))")
    }
    return host
  }
}
