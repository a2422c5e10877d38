import VDiskCore

/// Sector bitmap blocks of a differencing disk (vhdx-notes, "Sector bitmap blocks"; MS-VHDX 2.4):
/// 1 MiB per chunk, one bit per logical sector, least significant bit first; 1 = the sector is in
/// this file, 0 = read it from the parent. Read in 64 KiB pages through the `MetadataCache`.
struct SectorBitmap: Sendable {
  static let blockBytes: UInt64 = 1 << 20
  static let pageBytes: UInt64 = 64 << 10
  static let pageBits: UInt64 = pageBytes * 8

  let source: ReplayedFile
  let cache: MetadataCache

  /// The run of sectors from `sector` (a sector index within the chunk) to at most `limit`
  /// that share one bit, in the bitmap block at `blockOffset`: whether they are present and
  /// where the run ends. `limit` must not cross a 64 KiB page of the bitmap, which holds for
  /// any one payload block (at most 2^28 / 2^9 = 2^19 sectors, a page's bits).
  func run(blockOffset: UInt64, sector: UInt64, limit: UInt64) throws -> (present: Bool, end: UInt64) {
    let pageStart = sector / Self.pageBits * Self.pageBits
    let offset = blockOffset + pageStart / 8
    let words = try cache.value(
      for: TableKey(file: source.file, offset: offset, kind: 2), cost: Int(Self.pageBytes)
    ) {
      [UInt64](
        decoding: try source.readBytes(at: offset, count: Int(Self.pageBytes), what: "sector bitmap"),
        order: .littleEndian)
    }
    let end = min(limit, pageStart + Self.pageBits)
    var bit = sector - pageStart
    let last = end - pageStart
    guard Int(last + 63) / 64 <= words.count else {
      throw VDiskError.corrupt(
        source.file.path, at: offset, "sector bitmap at \(hex(offset)) is shared with other metadata")
    }
    let present = words[Int(bit / 64)] >> (bit % 64) & 1 == 1
    while bit < last {
      // Bits that differ from the run's value, from `bit` on.
      let word = words[Int(bit / 64)]
      let differing = (present ? ~word : word) >> (bit % 64)
      if differing != 0 {
        bit += UInt64(differing.trailingZeroBitCount)
        break
      }
      bit = (bit / 64 + 1) * 64
    }
    return (present, pageStart + min(bit, last))
  }
}
