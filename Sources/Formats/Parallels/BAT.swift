import VDiskCore

/// The Parallels BAT (parallels.txt, "BAT"): one little-endian u32 per cluster, zero for a
/// cluster not allocated, else where the cluster starts, in sectors ("WithoutFreeSpace") or in
/// clusters ("WithouFreSpacExt"). Pages of it live in the chain's `MetadataCache` as 64-bit
/// words; a writer keeps the pages it changed there dirty until it writes them back.
struct ParallelsBAT: Sendable {
  /// Entries per cached page (one 4 KiB read).
  static let pageEntries = 1024
  /// The cache's table kind for BAT pages.
  static let tableKind: UInt8 = 0x50

  let file: ImageFile
  let cache: MetadataCache
  let header: ParallelsHeader

  var count: Int { Int(header.batEntries) }
  var pageCount: Int { (count + Self.pageEntries - 1) / Self.pageEntries }

  /// Where page `page` starts in the file.
  func pageOffset(_ page: Int) -> UInt64 {
    UInt64(ParallelsHeader.size) + UInt64(page * Self.pageEntries) * 4
  }

  /// Entries in page `page` (the last page may be short).
  func pageLength(_ page: Int) -> Int { min(Self.pageEntries, count - page * Self.pageEntries) }

  func key(page: Int) -> TableKey { TableKey(file: file, offset: pageOffset(page), kind: Self.tableKind) }

  /// The entries of page `page` (`page < pageCount`), from the cache or the file (the header
  /// checked that the whole BAT lies in the file).
  func words(page: Int) throws -> [UInt64] {
    let offset = pageOffset(page)
    let n = pageLength(page)
    let words = try cache.value(for: key(page: page), cost: n * 8) {
      try file.readTable(
        of: UInt32.self, at: offset, count: n, order: .littleEndian, what: "Parallels BAT page"
      )
      .map(UInt64.init)
    }
    guard words.count == n else {
      throw VDiskError.corrupt(
        file.path, at: offset, "Parallels BAT page at \(hex(offset)) is shorter than expected")
    }
    return words
  }

  /// The entry of cluster `index`, or 0 (not allocated) past the BAT: QEMU reads clusters the
  /// BAT does not cover as zeros.
  func entry(_ index: UInt64) throws -> UInt32 {
    guard index < UInt64(count) else { return 0 }
    let page = Int(index) / Self.pageEntries
    return UInt32(truncatingIfNeeded: try words(page: page)[Int(index) - page * Self.pageEntries])
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
