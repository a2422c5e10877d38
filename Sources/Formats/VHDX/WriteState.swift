import VDiskCore

/// A metadata change a prepared write makes once its data is written (`VHDXWriter.commitWrite`).
enum VHDXLink: Sendable {
  /// BAT entry `index` becomes `raw`.
  case entry(index: UInt64, raw: UInt64)
  /// Sectors `sectors` (indices within chunk `chunk`) are present in the sector bitmap block at
  /// `bitmapOffset`.
  case present(bitmapOffset: UInt64, sectors: Range<UInt64>)
}

/// The writer's mutable state, behind `VHDXWriter.state`: where the next block goes and which
/// 4 KiB metadata sectors (BAT or sector bitmap) changed since the last write-back. The changed
/// words themselves live in the chain's `MetadataCache` as dirty pages, where readers find them.
struct VHDXWriteState {
  let file: ImageFile
  let bat: BAT
  let cache: MetadataCache
  /// Where the next payload or sector bitmap block goes (1 MiB aligned, past everything).
  var allocationEnd: UInt64
  /// File offsets of the 4 KiB metadata sectors changed since the last write-back.
  var dirtySectors: Set<UInt64> = []
  /// The sequence number of the last log entry written.
  var sequence: UInt64 = 0

  static let sectorSize = UInt64(LogEntry.sectorSize)

  /// The cache key of the 64 KiB BAT page holding entry `index`.
  func batPageKey(_ index: UInt64) -> TableKey {
    TableKey(file: file, offset: bat.region.offset + index / BAT.pageEntries * BAT.pageEntries * 8, kind: 1)
  }

  /// The cache key of the 64 KiB sector bitmap page holding file offset `offset`.
  func bitmapPageKey(_ offset: UInt64) -> TableKey {
    TableKey(file: file, offset: offset / SectorBitmap.pageBytes * SectorBitmap.pageBytes, kind: 2)
  }

  /// The cache key of the page holding metadata sector `sector`.
  func pageKey(ofSector sector: UInt64) -> TableKey {
    bat.region.range.contains(sector) ? batPageKey((sector - bat.region.offset) / 8) : bitmapPageKey(sector)
  }

  /// `bytes` 1 MiB-aligned bytes at the end of the file for a new block; the file is extended
  /// over it (a hole, reading as zeros, so that whatever a write leaves unwritten reads as zeros).
  mutating func allocate(_ bytes: UInt64) throws -> UInt64 {
    let offset = allocationEnd
    let (end, overflow) = offset.addingReportingOverflow(bytes)
    guard !overflow, end <= UInt64(Int64.max) else {
      throw VDiskError(.noSpace, path: file.path, "the VHDX file cannot grow past \(hex(offset))")
    }
    if file.size < end { try file.setSize(end) }
    allocationEnd = end
    return offset
  }

  /// Sets BAT entry `index` in its cached page (dirty until written back).
  mutating func setEntry(_ index: UInt64, _ raw: UInt64) throws {
    let page = try bat.page(containing: index)
    var words = page.words
    words[Int(index - page.first)] = raw
    cache.insert(batPageKey(index), words, cost: words.count * 8, dirty: true)
    dirtySectors.insert((bat.region.offset + index * 8) / Self.sectorSize * Self.sectorSize)
  }

  /// The bitmap page at `pageOffset` (64 KiB, 1 MiB-aligned block + a multiple of 64 KiB).
  func bitmapPage(_ pageOffset: UInt64) throws -> [UInt64] {
    let words = try cache.value(
      for: TableKey(file: file, offset: pageOffset, kind: 2), cost: Int(SectorBitmap.pageBytes)
    ) {
      [UInt64](
        decoding: try bat.source.readBytes(
          at: pageOffset, count: Int(SectorBitmap.pageBytes), what: "sector bitmap"),
        order: .littleEndian)
    }
    guard words.count == Int(SectorBitmap.pageBytes / 8) else {
      throw VDiskError.corrupt(
        file.path, at: pageOffset, "sector bitmap at \(hex(pageOffset)) is shared with other metadata")
    }
    return words
  }

  /// Marks `sectors` (within the chunk) present in the bitmap block at `bitmapOffset`. The
  /// sectors of one payload block lie within one 64 KiB page of the bitmap.
  mutating func setPresent(bitmapOffset: UInt64, sectors: Range<UInt64>) throws {
    guard !sectors.isEmpty else { return }
    let pageStart = sectors.lowerBound / SectorBitmap.pageBits * SectorBitmap.pageBits
    guard sectors.upperBound - pageStart <= SectorBitmap.pageBits else {
      throw VDiskError(.io, path: file.path, "sector run crosses a bitmap page (a writer bug)")
    }
    let pageOffset = bitmapOffset + pageStart / 8
    var words = try bitmapPage(pageOffset)
    for bit in sectors.lowerBound - pageStart..<sectors.upperBound - pageStart {
      words[Int(bit / 64)] |= 1 << (bit % 64)
    }
    cache.insert(bitmapPageKey(pageOffset), words, cost: Int(SectorBitmap.pageBytes), dirty: true)
    let first = (pageOffset + (sectors.lowerBound - pageStart) / 8) / Self.sectorSize
    let last = (pageOffset + (sectors.upperBound - 1 - pageStart) / 8) / Self.sectorSize
    for sector in first...last { dirtySectors.insert(sector * Self.sectorSize) }
  }

  /// The 4 KiB metadata sector at `offset` as it is now (cached words over the file's bytes where
  /// the page does not reach, such as the end of the BAT region).
  func sectorBytes(_ offset: UInt64) throws -> [UInt8] {
    let key = pageKey(ofSector: offset)
    let words: [UInt64]
    if key.kind == 1 {
      words = try bat.page(containing: (key.offset - bat.region.offset) / 8).words
    } else {
      words = try bitmapPage(key.offset)
    }
    let firstWord = Int((offset - key.offset) / 8)
    let count = max(0, min(512, words.count - firstWord))
    var bytes: [UInt8]
    if count < 512 {
      bytes = try bat.source.readBytes(at: offset, count: Int(Self.sectorSize), what: "metadata sector")
    } else {
      bytes = [UInt8](repeating: 0, count: Int(Self.sectorSize))
    }
    for k in 0..<count {
      let word = words[firstWord + k]
      for b in 0..<8 { bytes[k * 8 + b] = UInt8(truncatingIfNeeded: word >> UInt64(8 * b)) }
    }
    return bytes
  }
}
