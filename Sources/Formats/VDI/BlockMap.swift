import VDiskCore

/// The VDI block map (vdi.md, "Block map"): one little-endian u32 per block, a data slot index or
/// one of two markers. Pages of it live in the chain's shared `MetadataCache` (as 64-bit words, one
/// per entry); a writer keeps the pages it changed there dirty until it writes them back. Nothing
/// here reads guest data.
struct VDIBlockMap: Sendable {
  /// VDI_IMAGE_BLOCK_FREE: not allocated (the parent's, or zeros in a base image).
  static let free: UInt32 = 0xFFFF_FFFF
  /// VDI_IMAGE_BLOCK_ZERO: reads as zeros; the parent is not consulted.
  static let zero: UInt32 = 0xFFFF_FFFE
  /// Entries per cached page (one 4 KiB read).
  static let pageEntries = 1024

  let file: ImageFile
  let cache: MetadataCache
  let header: VDIHeader

  /// Bytes of metadata covering the whole disk (map pages, for the cache budget).
  var coverage: UInt64 { UInt64(header.blockCount) * 8 }

  /// Whether `entry` names a data slot (vdi.md: any value below VDI_IMAGE_BLOCK_ZERO).
  static func isAllocated(_ entry: UInt32) -> Bool { entry < zero }

  /// Number of pages the map has.
  var pageCount: Int { (Int(header.blockCount) + Self.pageEntries - 1) / Self.pageEntries }

  /// Where page `page` starts in the file.
  func pageOffset(_ page: Int) -> UInt64 { header.blockMapOffset + UInt64(page * Self.pageEntries) * 4 }

  /// Entries in page `page` (the last page may be short).
  func pageLength(_ page: Int) -> Int {
    min(Self.pageEntries, Int(header.blockCount) - page * Self.pageEntries)
  }

  /// The cache key of page `page`.
  func key(page: Int) -> TableKey { TableKey(file: file, offset: pageOffset(page)) }

  /// What page `page` costs in the cache.
  func cost(page: Int) -> Int { pageLength(page) * 8 }

  /// The entries of page `page` (`page < pageCount`), from the cache or the file.
  func words(page: Int) throws -> [UInt64] {
    let offset = pageOffset(page)
    let n = pageLength(page)
    let words = try cache.value(for: key(page: page), cost: n * 8) {
      try file.readTable(
        of: UInt32.self, at: offset, count: n, order: .littleEndian, what: "VDI block map page"
      )
      .map(UInt64.init)
    }
    guard words.count == n else {
      throw VDiskError.corrupt(
        file.path, at: offset, "VDI block map page at \(hex(offset)) is shorter than expected")
    }
    return words
  }

  /// The map entry of block `index` (`index < blockCount`; the header checked that the whole map
  /// lies in the file).
  func entry(_ index: Int) throws -> UInt32 {
    let page = index / Self.pageEntries
    let words = try words(page: page)
    return UInt32(truncatingIfNeeded: words[index - page * Self.pageEntries])
  }

  /// Where the data of block `index`, stored in slot `slot`, starts in the file (vdi.md: offData +
  /// slot * slot_size + cbBlockExtra), after checking that the part the disk uses lies inside it.
  func dataOffset(block index: Int, slot: UInt32) throws -> UInt64 {
    let (product, o1) = UInt64(slot).multipliedReportingOverflow(by: header.slotSize)
    let (start, o2) = header.dataOffset.addingReportingOverflow(product)
    let (data, o3) = start.addingReportingOverflow(UInt64(header.blockExtra))
    let blockSize = UInt64(header.blockSize)
    let used = min(blockSize, header.virtualSize - UInt64(index) * blockSize)
    guard !o1, !o2, !o3, data <= file.size, used <= file.size - data else {
      throw VDiskError.corrupt(
        file.path, at: header.blockMapOffset + UInt64(index) * 4,
        "VDI block \(index) (slot \(slot)) lies beyond end of file (size \(hex(file.size)))")
    }
    return data
  }
}
