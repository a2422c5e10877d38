import VDiskCore

/// What a writable open checks before the writer trusts an image, and where the writer starts.
///
/// The writer relies on: a valid footer at the very end of the file (new blocks take its place
/// and it moves after them), every allocated block lying whole before that footer, no two blocks
/// and no block and metadata structure (footer copy, dynamic header, BAT, a differencing disk's
/// parent locator data) overlapping, and all metadata before the footer. The checksums and block
/// size were checked when the image was planned (`VHDFooter.locate`, `VHDDynamicHeader`). An image
/// that fails is refused with `.readOnly` (a mount then falls back to read-only with one notice)
/// rather than written into and damaged further.
struct VHDWriteStart: Sendable {
  /// The 512 bytes of the footer at the end of the file, written again after every new block.
  var footer: [UInt8]
  /// Where that footer is now: the next block goes here.
  var footerOffset: UInt64

  /// BAT entries read per pass of the check.
  static let scanEntries = 65536

  static func check(
    file: ImageFile, footer: VHDFooter, header: VHDDynamicHeader?, virtualSize: UInt64
  ) throws -> VHDWriteStart {
    let path = file.path
    func refuse(_ detail: String, at offset: UInt64? = nil) -> VDiskError {
      VDiskError(.readOnly, path: path, offset: offset, "cannot write this VHD: \(detail)")
    }
    guard file.size >= UInt64(VHDFooter.size) else {
      throw refuse("the file is too small for a footer")
    }
    let end = file.size - UInt64(VHDFooter.size)
    guard footer.location == end else {
      throw refuse(
        "its footer at the end of the file (\(hex(end))) is damaged; only the copy at offset 0 is good")
    }
    let bytes = try file.readBytes(at: end, count: VHDFooter.size, what: "VHD footer")
    if let problem = VHDFooter.check(bytes, at: end) { throw refuse(problem, at: end) }
    let start = VHDWriteStart(footer: bytes, footerOffset: end)
    guard let header else { return start }

    var metadata: [(what: String, range: Range<UInt64>)] = [("footer copy", 0..<UInt64(VHDFooter.size))]
    func add(_ what: String, _ offset: UInt64, _ length: UInt64) throws {
      let (stop, overflow) = offset.addingReportingOverflow(length)
      guard !overflow, stop <= end else {
        throw refuse("the \(what) at \(hex(offset)) reaches into the footer at \(hex(end))", at: offset)
      }
      metadata.append((what, offset..<stop))
    }
    try add("dynamic disk header", footer.dataOffset, UInt64(VHDDynamicHeader.size))
    try add("BAT", header.tableOffset, UInt64(header.maxTableEntries) * 4)
    if footer.diskType == .differencing {
      // New blocks go where the footer is: locator data past it would be overwritten.
      for locator in header.locators where locator.dataLength > 0 {
        try add("parent locator data", locator.dataOffset, UInt64(locator.dataLength))
      }
    }

    let blockSize = UInt64(header.blockSize)
    let entryCount = Int((virtualSize + blockSize - 1) / blockSize)
    // Disjoint blocks of at least a bitmap and one byte each: no more fit before the footer.
    // More allocated entries than that must overlap; refusing then bounds the list below by
    // the file, not by the BAT (whose entries may all name one block).
    let fitting = end / (header.bitmapSize + 1)
    var blocks: [(start: UInt64, end: UInt64, index: Int)] = []
    var first = 0
    while first < entryCount {
      let count = min(Self.scanEntries, entryCount - first)
      let entries = try file.readTable(
        of: UInt32.self, at: header.tableOffset + UInt64(first) * 4, count: count, order: .bigEndian,
        what: "BAT")
      for (i, entry) in entries.enumerated() where entry != VHDBlockTable.unallocated {
        let index = first + i
        let blockStart = UInt64(entry) * 512
        // What a write may touch: the bitmap and the part of the block the disk uses.
        let used = min(blockSize, virtualSize - UInt64(index) * blockSize)
        let blockEnd = blockStart + header.bitmapSize + used
        guard blockEnd <= end else {
          throw refuse(
            "block \(index) (BAT entry \(entry)) at \(hex(blockStart))..\(hex(blockEnd)) reaches past the footer at \(hex(end))",
            at: blockStart)
        }
        if let hit = metadata.first(where: { $0.range.overlaps(blockStart..<blockEnd) }) {
          throw refuse(
            "block \(index) (BAT entry \(entry)) at \(hex(blockStart)) overlaps the \(hit.what) at \(hex(hit.range.lowerBound))",
            at: blockStart)
        }
        guard UInt64(blocks.count) < fitting else {
          throw refuse(
            "more than \(fitting) blocks are allocated, more than fit before the footer at \(hex(end)): some overlap",
            at: blockStart)
        }
        blocks.append((blockStart, blockEnd, index))
      }
      first += count
    }
    blocks.sort { $0.start < $1.start }
    for (a, b) in zip(blocks, blocks.dropFirst()) where b.start < a.end {
      throw refuse(
        "blocks \(a.index) and \(b.index) overlap (at \(hex(a.start)) and \(hex(b.start)))", at: b.start)
    }
    return start
  }
}
