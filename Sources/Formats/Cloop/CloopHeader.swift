import VDiskCore

/// A cloop v2 image's header and block offsets table (the Linux cloop driver's format, as QEMU's
/// block/cloop.c reads it): a 128-byte shell-script preamble, the block size and block count
/// (big-endian u32), then `count + 1` big-endian u64 offsets; block `i` is the zlib stream from
/// `offsets[i]` to `offsets[i + 1]` and inflates to exactly one block.
public struct CloopHeader: Sendable {
  /// The start of the preamble of a v2 image (QEMU's probe looks for this line and the next).
  static let magic = Array("#!/bin/sh\n#V2.0 Format\n".utf8)
  /// Where the block size is; the block count follows, then the offsets.
  static let preambleSize = 128
  static let tableOffset = UInt64(preambleSize + 8)
  /// QEMU's limit on the block size (MAX_BLOCK_SIZE, 64 MiB).
  static let maxBlockSize: UInt32 = 64 << 20
  /// The largest offsets table we hold in memory (QEMU allows 512 MiB; a CD image of 64 KiB blocks
  /// needs 90 KiB).
  static let maxTableBytes: UInt64 = 64 << 20
  /// The most compressed bytes one block may take: twice the block size (zlib never grows data
  /// by more than a few bytes per 16 KiB; QEMU allows twice the largest block size, 128 MiB, for
  /// any block size). Decoding reads that much input at most.
  func maxCompressedBlock() -> UInt64 { 2 * UInt64(blockSize) + 4096 }

  public var blockSize: UInt32
  public var blockCount: UInt32
  /// `blockCount + 1` file offsets, checked to increase and to lie inside the file.
  public var offsets: [UInt64]

  public var virtualSize: UInt64 { UInt64(blockCount) * UInt64(blockSize) }
  /// The largest compressed block.
  public var largestCompressedBlock: UInt64

  static func matches(_ head: [UInt8]) -> Bool {
    head.count >= magic.count && Array(head[0..<magic.count]) == magic
  }

  public init(file: ImageFile) throws {
    let path = file.path
    guard file.size >= Self.tableOffset else {
      throw VDiskError.corrupt(path, "file of \(file.size) bytes is too small for a cloop header")
    }
    let r = ByteReader(
      try file.readBytes(at: 0, count: Int(Self.tableOffset), what: "cloop header"), path: path)
    guard Array(try r.bytes(0, count: Self.magic.count, "magic")) == Self.magic else {
      throw VDiskError.corrupt(path, at: 0, "no cloop V2.0 preamble")
    }
    blockSize = try r.u32be(Self.preambleSize, "block size")
    blockCount = try r.u32be(Self.preambleSize + 4, "block count")
    guard blockSize > 0, blockSize % 512 == 0, blockSize <= Self.maxBlockSize else {
      throw VDiskError.corrupt(
        path, at: UInt64(Self.preambleSize),
        "cloop block size \(blockSize) is not a multiple of 512 between 512 bytes and 64 MiB")
    }
    let tableBytes = (UInt64(blockCount) + 1) * 8
    guard tableBytes <= Self.maxTableBytes else {
      throw VDiskError.corrupt(
        path, at: UInt64(Self.preambleSize + 4),
        "cloop offsets table of \(UInt64(blockCount) + 1) entries exceeds \(Self.maxTableBytes >> 20) MiB")
    }
    guard Self.tableOffset + tableBytes <= file.size else {
      throw VDiskError.corrupt(
        path, at: Self.tableOffset,
        "cloop offsets table of \(UInt64(blockCount) + 1) entries runs past end of file (size \(hex(file.size)))"
      )
    }
    offsets = try file.readTable(
      of: UInt64.self, at: Self.tableOffset, count: Int(blockCount) + 1, order: .bigEndian,
      what: "cloop offsets table")
    largestCompressedBlock = 0
    for i in 0..<Int(blockCount) {
      let (start, end) = (offsets[i], offsets[i + 1])
      let entry = Self.tableOffset + UInt64(i) * 8
      guard start <= end else {
        throw VDiskError.corrupt(
          path, at: entry,
          "cloop offsets are not increasing at block \(i) (\(hex(start)) then \(hex(end)))")
      }
      guard end - start <= maxCompressedBlock() else {
        throw VDiskError.corrupt(
          path, at: entry,
          "cloop block \(i) of \(end - start) compressed bytes is larger than twice the block size (\(blockSize))"
        )
      }
      guard end <= file.size else {
        throw VDiskError.corrupt(
          path, at: entry,
          "cloop block \(i) (\(hex(start))–\(hex(end))) lies beyond end of file (size \(hex(file.size)))")
      }
      largestCompressedBlock = max(largestCompressedBlock, end - start)
    }
  }
}
