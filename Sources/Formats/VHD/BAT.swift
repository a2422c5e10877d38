import VDiskCore

/// The block allocation table of a dynamic or differencing disk (vhd.asciidoc, "Block
/// allocation table") and the sector bitmaps in front of each block. BAT pages and bitmaps live
/// in the chain's shared `MetadataCache`; nothing here reads guest data.
struct VHDBlockTable: Sendable {
  /// vhd.asciidoc: a BAT entry of 0xFFFFFFFF marks an unallocated block.
  static let unallocated: UInt32 = 0xFFFF_FFFF
  /// BAT entries per cached page (one 4 KiB read).
  static let pageEntries = 1024
  /// Cache kind of sector-bitmap entries, apart from BAT pages (kind 0) at the same offset.
  static let bitmapKind: UInt8 = 1

  let file: ImageFile
  let cache: MetadataCache
  let tableOffset: UInt64
  /// Entries the virtual size needs (`ceil(virtualSize / blockSize)`), at most `maxTableEntries`.
  let entryCount: Int
  let blockSize: UInt64
  let bitmapSize: UInt64
  let virtualSize: UInt64

  /// Checks the table against the file: at least one entry per block of the disk, and the whole
  /// table (max_table_entries) inside the file.
  init(file: ImageFile, header: VHDDynamicHeader, virtualSize: UInt64, cache: MetadataCache) throws {
    let path = file.path
    let blockSize = UInt64(header.blockSize)
    let needed = (virtualSize + blockSize - 1) / blockSize
    guard needed <= UInt64(header.maxTableEntries) else {
      throw VDiskError.corrupt(
        path,
        "BAT has \(header.maxTableEntries) entries but a disk of \(virtualSize) bytes in blocks of \(blockSize) needs \(needed)"
      )
    }
    let tableBytes = UInt64(header.maxTableEntries) * 4
    guard header.tableOffset <= file.size, tableBytes <= file.size - header.tableOffset else {
      throw VDiskError.corrupt(
        path, at: header.tableOffset,
        "BAT of \(header.maxTableEntries) entries at \(hex(header.tableOffset)) runs past end of file (size \(hex(file.size)))"
      )
    }
    self.file = file
    self.cache = cache
    tableOffset = header.tableOffset
    entryCount = Int(needed)
    self.blockSize = blockSize
    bitmapSize = header.bitmapSize
    self.virtualSize = virtualSize
  }

  /// Bytes of metadata covering the whole disk, as the cache holds it (BAT pages at 8 bytes an
  /// entry, and every block's sector bitmap), for the cache budget. Counting the BAT alone gave
  /// a 256 MiB disk a 1 KiB budget: every read re-read its bitmap and took the cache's write
  /// lock, and 4 concurrent readers got a third of one reader's rate.
  var coverage: UInt64 { UInt64(entryCount) * (8 + bitmapSize) }

  /// The BAT entry of block `index` (`index < entryCount`): a sector number or `unallocated`.
  func entry(_ index: Int) throws -> UInt32 {
    let page = index / Self.pageEntries
    let words = try pageWords(page)
    let slot = index - page * Self.pageEntries
    guard slot < words.count else {
      throw VDiskError.corrupt(
        file.path, at: pageOffset(page), "BAT page at \(hex(pageOffset(page))) is shorter than expected")
    }
    return UInt32(truncatingIfNeeded: words[slot])
  }

  /// Entries in BAT page `page` (the last page of the table may be short).
  func pageCount(_ page: Int) -> Int { min(Self.pageEntries, entryCount - page * Self.pageEntries) }

  /// Where BAT page `page` starts in the file.
  func pageOffset(_ page: Int) -> UInt64 { tableOffset + UInt64(page * Self.pageEntries) * 4 }

  /// The cache key of BAT page `page` (kind 0).
  func pageKey(_ page: Int) -> TableKey { TableKey(file: file, offset: pageOffset(page)) }

  /// Cost of a cached BAT page (8 bytes an entry, as the cache holds it).
  func pageCost(_ page: Int) -> Int { pageCount(page) * 8 }

  /// BAT page `page` as the cache holds it (one entry per word; dirty entries a writer changed
  /// included), read from the file on a miss.
  func pageWords(_ page: Int) throws -> [UInt64] {
    let offset = pageOffset(page)
    let count = pageCount(page)
    return try cache.value(for: pageKey(page), cost: count * 8) {
      try file.readTable(of: UInt32.self, at: offset, count: count, order: .bigEndian, what: "BAT page")
        .map(UInt64.init)
    }
  }

  /// The cache key of the sector bitmap of the block at `start`.
  func bitmapKey(_ start: UInt64) -> TableKey { TableKey(file: file, offset: start, kind: Self.bitmapKind) }

  /// Where block `index` stored at BAT sector `sector` keeps its data, after checking that the
  /// part of it the disk uses lies inside the file.
  func dataOffset(block index: Int, sector: UInt32) throws -> UInt64 {
    let start = UInt64(sector) * 512
    let data = start + bitmapSize
    let used = min(blockSize, virtualSize - UInt64(index) * blockSize)
    guard data <= file.size, used <= file.size - data else {
      throw VDiskError.corrupt(
        file.path, at: start,
        "block \(index) at \(hex(start)) (BAT entry \(sector)) lies beyond end of file (size \(hex(file.size)))"
      )
    }
    return data
  }

  /// The sector bitmap of the block at `start` (its BAT sector * 512), packed big-endian into
  /// words so that bit `63 - s % 64` of word `s / 64` is sector `s` (vhd.asciidoc, "Sector
  /// bitmap": MSB first).
  func bitmap(at start: UInt64) throws -> [UInt64] {
    let count = Int(bitmapSize)
    return try cache.value(for: bitmapKey(start), cost: count) {
      // bitmapSize is a whole number of sectors, so of words.
      try file.readTable(
        of: UInt64.self, at: start, count: count / 8, order: .bigEndian, what: "sector bitmap")
    }
  }
}

extension [UInt64] {
  /// Bit `sector` of a packed sector bitmap (false past its end).
  func sectorBit(_ sector: Int) -> Bool {
    let word = sector >> 6
    guard word < count else { return false }
    return self[word] >> UInt64(63 - (sector & 63)) & 1 == 1
  }

  /// How many sectors from `sector` (at most `limit`) have the same bit as `sector`.
  func runLength(from sector: Int, limit: Int) -> Int {
    let bit = sectorBit(sector)
    let uniform: UInt64 = bit ? .max : 0
    var s = sector + 1
    while s < limit {
      if s & 63 == 0, s >> 6 < count, self[s >> 6] == uniform, s + 64 <= limit {
        s += 64
        continue
      }
      guard sectorBit(s) == bit else { break }
      s += 1
    }
    return s - sector
  }
}
