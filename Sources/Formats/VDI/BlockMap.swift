import VDiskCore

/// The VDI block map (vdi.md, "Block map"): one little-endian u32 per block, a data slot index or
/// one of two markers. Pages of it live in the chain's shared `MetadataCache`; nothing here reads
/// guest data.
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

  /// The map entry of block `index` (`index < blockCount`; the header checked that the whole map
  /// lies in the file).
  func entry(_ index: Int) throws -> UInt32 {
    let count = Int(header.blockCount)
    let page = index / Self.pageEntries
    let first = page * Self.pageEntries
    let n = min(Self.pageEntries, count - first)
    let offset = header.blockMapOffset + UInt64(first) * 4
    let words = try cache.value(for: TableKey(file: file, offset: offset), cost: n * 8) {
      try file.readTable(
        of: UInt32.self, at: offset, count: n, order: .littleEndian, what: "VDI block map page"
      )
      .map(UInt64.init)
    }
    guard index - first < words.count else {
      throw VDiskError.corrupt(
        file.path, at: offset, "VDI block map page at \(hex(offset)) is shorter than expected")
    }
    return UInt32(truncatingIfNeeded: words[index - first])
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
