import VDiskCore

/// One chunk of a DMG partition: a run of guest sectors and where (and how) it is stored.
public struct Chunk: Sendable, Equatable {
  /// The chunk's encoding (the `mish` entry type).
  public enum Kind: Sendable, Equatable {
    /// Zero fill (type 0) and "ignore" (type 2): reads as zeros.
    case zero
    /// Stored as is (type 1).
    case raw
    /// Apple Data Compression (type 0x80000004).
    case adc
    /// zlib (type 0x80000005).
    case zlib
    /// bzip2 (type 0x80000006).
    case bzip2
    /// LZMA (type 0x80000008): one .xz stream.
    case lzma
  }

  public var kind: Kind
  /// First guest sector (absolute: the partition's first sector added).
  public var sector: UInt64
  public var sectorCount: UInt64
  /// Where the stored bytes start in the file (data fork, partition and chunk offsets added).
  public var hostOffset: UInt64
  /// How many stored bytes the chunk has.
  public var length: UInt64

  public var end: UInt64 { sector + sectorCount }
}

/// A `mish` block table (BLKXTable): one partition's chunks. Big-endian: signature +0, first
/// sector +8, sector count +16, data offset +24 (added to every chunk's offset), chunk count
/// +200, then 40-byte chunk entries from +204 (type +0, comment +4, sector +8 and sector count
/// +16 relative to the partition, compressed offset +24, compressed length +32).
enum BlockTable {
  static let magic: UInt32 = 0x6D69_7368  // "mish"
  static let headerSize = 204
  static let entrySize = 40

  /// Chunk types (the names Apple's tools and QEMU give them).
  static let udze: UInt32 = 0
  static let udrw: UInt32 = 1
  static let udig: UInt32 = 2
  static let udco: UInt32 = 0x8000_0004
  static let udzo: UInt32 = 0x8000_0005
  static let udbz: UInt32 = 0x8000_0006
  static let ulfo: UInt32 = 0x8000_0007
  /// LZMA ("ULMO" images). The value and the container are checked against two public readers:
  /// 7-Zip's CPP/7zip/Archive/DmgHandler.cpp names 0x80000008 METHOD_XZ and decodes it with its
  /// .xz decoder; libyal's libmodi ("Mac OS disk image types", block table entry types) lists
  /// 0x80000008 as "LZMA compressed data" and decodes it with liblzma's lzma_stream_decoder
  /// (the .xz format). So a chunk is one .xz stream (LZMA2 filter), not raw or .lzma-alone data.
  static let ulmo: UInt32 = 0x8000_0008
  static let udcm: UInt32 = 0x7FFF_FFFE
  static let udle: UInt32 = 0xFFFF_FFFF

  /// QEMU's bound on one decoded chunk (DMG_LENGTHS_MAX, 64 MiB): a compressed chunk may
  /// neither take nor inflate to more.
  static let maxCompressedChunk: UInt64 = 64 << 20

  /// The chunks of partition `index` (table `bytes`), checked against the trailer and the file:
  /// sectors inside the disk, stored bytes inside the file before the trailer, compressed
  /// chunks within `maxCompressedChunk`. Comments and the terminator are dropped, as are chunks
  /// of no sectors.
  static func chunks(_ bytes: [UInt8], index: Int, trailer: KolyTrailer, path: String) throws -> [Chunk] {
    let r = ByteReader(bytes, path: path)
    func fail(_ detail: String) -> VDiskError {
      VDiskError.corrupt(path, "DMG blkx entry \(index): \(detail)")
    }
    guard bytes.count >= headerSize, try r.u32be(0, "mish signature") == magic else {
      throw fail("no mish block table")
    }
    let firstSector = try r.u64be(8, "first sector")
    let dataOffset = try r.u64be(24, "data offset")
    let count = Int(try r.u32be(200, "chunk count"))
    guard count <= (bytes.count - headerSize) / entrySize else {
      throw fail("\(count) chunks do not fit in a table of \(bytes.count) bytes")
    }
    guard dataOffset <= trailer.offset - trailer.dataForkOffset else {
      throw fail("data offset \(hex(dataOffset)) lies beyond the trailer")
    }
    let base = trailer.dataForkOffset + dataOffset
    var chunks: [Chunk] = []
    chunks.reserveCapacity(count)
    for i in 0..<count {
      let e = headerSize + i * entrySize
      let type = try r.u32be(e, "chunk type")
      let kind: Chunk.Kind
      switch type {
      case udze, udig: kind = .zero
      case udrw: kind = .raw
      case udco: kind = .adc
      case udzo: kind = .zlib
      case udbz: kind = .bzip2
      case ulmo: kind = .lzma
      case udcm, udle: continue
      case ulfo:
        throw VDiskError.unsupported(
          path, "DMG chunk type 0x80000007 (LZFSE) is not supported (blkx entry \(index), chunk \(i))")
      default:
        throw fail("chunk \(i) has unknown type \(hex(UInt64(type)))")
      }
      let sector = try r.u64be(e + 8, "chunk sector")
      let sectorCount = try r.u64be(e + 16, "chunk sector count")
      let offset = try r.u64be(e + 24, "chunk offset")
      let length = try r.u64be(e + 32, "chunk length")
      guard sectorCount > 0 else { continue }
      let (start, o1) = firstSector.addingReportingOverflow(sector)
      let (end, o2) = start.addingReportingOverflow(sectorCount)
      guard !o1, !o2, end <= trailer.sectorCount else {
        throw fail(
          "chunk \(i) (sector \(firstSector) + \(sector), \(sectorCount) sectors) lies beyond the disk's \(trailer.sectorCount) sectors"
        )
      }
      var chunk = Chunk(kind: kind, sector: start, sectorCount: sectorCount, hostOffset: 0, length: 0)
      if kind != .zero {
        let stored = kind == .raw ? sectorCount * 512 : length
        if kind == .raw, length < stored {
          throw fail("raw chunk \(i) stores \(length) bytes for \(sectorCount) sectors")
        }
        if kind != .raw, length > maxCompressedChunk || sectorCount * 512 > maxCompressedChunk || length == 0
        {
          throw fail(
            "compressed chunk \(i) of \(length) bytes for \(sectorCount) sectors is empty or exceeds \(maxCompressedChunk >> 20) MiB"
          )
        }
        let limit = trailer.offset - base
        guard offset <= limit, stored <= limit - offset else {
          throw fail(
            "chunk \(i) (\(hex(base)) + \(hex(offset)), \(stored) bytes) lies beyond the trailer at \(hex(trailer.offset))"
          )
        }
        chunk.hostOffset = base + offset
        chunk.length = stored
      }
      chunks.append(chunk)
    }
    return chunks
  }
}
