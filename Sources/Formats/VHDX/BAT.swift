import VDiskCore

/// One BAT entry (vhdx-notes, "BAT"; MS-VHDX 2.5.1): state in bits 0-2, FileOffsetMB in bits
/// 20-63.
struct BATEntry: Sendable, Equatable {
  var raw: UInt64
  var state: UInt8 { UInt8(raw & 7) }
  /// `raw & 0xFFFFFFFFFFF00000`: FileOffsetMB * 1 MiB.
  var fileOffset: UInt64 { raw & 0xFFFF_FFFF_FFF0_0000 }

  // Payload block states (MS-VHDX 2.5.1.1). 5 is the 0.95 draft's UNMAPPED, which qemu still reads.
  static let notPresent: UInt8 = 0
  static let undefined: UInt8 = 1
  static let zero: UInt8 = 2
  static let unmapped: UInt8 = 3
  static let unmappedDraft: UInt8 = 5
  static let fullyPresent: UInt8 = 6
  static let partiallyPresent: UInt8 = 7
  // Sector bitmap block states (MS-VHDX 2.5.1.2).
  static let bitmapPresent: UInt8 = 6
}

/// The BAT's geometry and its entries, read in pages through the chain's `MetadataCache`
/// (vhdx-notes, "BAT"). Payload-block and sector-bitmap entries are interleaved: each chunk is
/// ChunkRatio payload entries followed by one sector-bitmap entry.
struct BAT: Sendable {
  /// Entries per cached page (64 KiB).
  static let pageEntries: UInt64 = 8192
  /// A sector bitmap block always covers 2^23 sectors (MS-VHDX 2.4).
  static let sectorsPerChunk: UInt64 = 1 << 23

  let source: ReplayedFile
  let cache: MetadataCache
  let region: RegionTable.Region
  let blockSize: UInt64
  /// ChunkRatio = 2^23 * LogicalSectorSize / BlockSize.
  let chunkRatio: UInt64
  let dataBlocks: UInt64
  let bitmapBlocks: UInt64
  /// Entries the BAT must hold.
  let entryCount: UInt64
  /// A differencing disk: its BAT interleaves sector bitmap entries, read through the cache.
  let differencing: Bool
  /// The whole table, when `loadingResident` read it. A layer is read-only, so its BAT cannot
  /// change while mounted, and a lookup in a plain array writes no cache line that the workers
  /// share (a `MetadataCache` hit takes a lock, stamps the entry and retains the page): 4 KiB
  /// random reads, 4 jobs, vhdx, 2459 instead of 3021 instructions a request (callgrind).
  private(set) var resident: [UInt64]?
  /// 4 MiB: the BAT of a 16 TiB disk of 32 MiB blocks.
  static let residentLimit: UInt64 = 4 << 20

  init(_ source: ReplayedFile, region: RegionTable.Region, metadata: VHDXMetadata, cache: MetadataCache)
    throws
  {
    self.source = source
    self.cache = cache
    self.region = region
    blockSize = metadata.blockSize
    // Block size (<= 2^28) and sector size (512 or 4096) are validated, so 2^23 * 4096 fits and
    // the ratio is at least 16 and exact.
    chunkRatio = (Self.sectorsPerChunk * metadata.logicalSectorSize) / blockSize
    dataBlocks = metadata.virtualSize / blockSize + (metadata.virtualSize % blockSize == 0 ? 0 : 1)
    bitmapBlocks = dataBlocks / chunkRatio + (dataBlocks % chunkRatio == 0 ? 0 : 1)
    differencing = metadata.hasParent
    if metadata.hasParent {
      let (n, overflow) = bitmapBlocks.multipliedReportingOverflow(by: chunkRatio + 1)
      guard !overflow else {
        throw VDiskError.corrupt(source.file.path, at: region.offset, "BAT size overflows")
      }
      entryCount = n
    } else {
      entryCount = dataBlocks == 0 ? 0 : dataBlocks + (dataBlocks - 1) / chunkRatio
    }
    let (bytes, overflow) = entryCount.multipliedReportingOverflow(by: 8)
    guard !overflow, bytes <= region.length else {
      throw VDiskError.corrupt(
        source.file.path, at: region.offset,
        "BAT region (\(hex(region.length)) bytes) cannot hold the \(entryCount) entries a \(metadata.virtualSize)-byte disk of \(blockSize)-byte blocks needs"
      )
    }
  }

  /// Bytes of metadata that cover the whole disk as the cache holds it (for the default cache
  /// budget): the BAT at 8 bytes an entry, and for a differencing disk its sector bitmaps (one
  /// bit per logical sector).
  var coverage: UInt64 {
    // A sector bitmap block is 1 MiB (one bit for each of a chunk's 2^23 sectors).
    let (bitmaps, overflow) = bitmapBlocks.multipliedReportingOverflow(by: 1 << 20)
    return entryCount * 8 + (!differencing ? 0 : overflow ? UInt64.max / 2 : bitmaps)
  }

  /// BAT index of payload block `block`: block + floor(block / ChunkRatio).
  func payloadIndex(_ block: UInt64) -> UInt64 { block + block / chunkRatio }

  /// BAT index of the sector bitmap of chunk `chunk`: chunk * (ChunkRatio + 1) + ChunkRatio.
  func bitmapIndex(_ chunk: UInt64) -> UInt64 { chunk * (chunkRatio + 1) + chunkRatio }

  /// This BAT with the whole table read into `resident` when it fits both `residentLimit` and
  /// the metadata cache's budget (which it then stands in for); else unchanged, its pages going
  /// through the cache.
  func loadingResident() throws -> BAT {
    let bytes = entryCount * 8  // <= region.length, checked in init
    guard entryCount > 0, bytes <= Self.residentLimit, bytes <= UInt64(cache.budget) else { return self }
    var copy = self
    let table = try source.readBytes(at: region.offset, count: Int(bytes), what: "BAT")
    copy.resident = [UInt64](decoding: table, order: .littleEndian)
    return copy
  }

  /// The cached page holding entry `index` (its first index and its words).
  func page(containing index: UInt64) throws -> (first: UInt64, words: [UInt64]) {
    guard index < entryCount else {
      throw VDiskError.corrupt(
        source.file.path, at: region.offset, "BAT index \(index) is past the \(entryCount) entries")
    }
    let first = index / Self.pageEntries * Self.pageEntries
    let count = Int(min(Self.pageEntries, entryCount - first))
    let offset = region.offset + first * 8
    let words = try cache.value(for: TableKey(file: source.file, offset: offset, kind: 1), cost: count * 8) {
      [UInt64](
        decoding: try source.readBytes(at: offset, count: count * 8, what: "BAT page"), order: .littleEndian)
    }
    guard words.count == count else {
      throw VDiskError.corrupt(
        source.file.path, at: offset, "BAT page at \(hex(offset)) is shared with other metadata")
    }
    return (first, words)
  }

  func entry(_ index: UInt64) throws -> BATEntry {
    if let resident {
      guard index < entryCount else {
        throw VDiskError.corrupt(
          source.file.path, at: region.offset, "BAT index \(index) is past the \(entryCount) entries")
      }
      return BATEntry(raw: resident[Int(index)])
    }
    let p = try page(containing: index)
    return BATEntry(raw: p.words[Int(index - p.first)])
  }
}
