import Foundation
import TestSupport
import VDiskCore

/// The layout of a VHD file as the test reads it on its own (vhd.asciidoc), to check what a
/// writer left: footers, BAT, blocks.
struct VHDLayoutCheck {
  var problems: [String] = []
  /// Allocated blocks: index → host offset of the block (its bitmap).
  var blocks: [Int: UInt64] = [:]
  var blockSize: UInt64 = 0
  var bitmapSize: UInt64 = 0

  /// Checks `path`: a valid footer at the end (and, unless fixed, a valid copy at 0 equal to it),
  /// a valid dynamic header, and every BAT entry naming a whole block inside the file, before
  /// the footer, after the BAT and overlapping no other block.
  init(_ path: String, virtualSize: UInt64) throws {
    let size = try fileSize(path)
    guard size >= 512 else {
      problems.append("file of \(size) bytes")
      return
    }
    let end = try readBytes(path, at: size - 512, count: 512)
    if Array(end[0..<8]) != Array("conectix".utf8) { problems.append("no footer cookie at the end") }
    let sum = end[64..<68].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    if sum != vhdChecksum(end, field: 64..<68) { problems.append("footer checksum at the end is wrong") }
    let type = end[60..<64].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    guard type != 2 else { return }
    let copy = try readBytes(path, at: 0, count: 512)
    if copy != end { problems.append("footer copy at offset 0 differs from the footer at the end") }
    let dataOffset = try field(path, at: 16, width: 8)
    let header = try readBytes(path, at: dataOffset, count: 1024)
    let headerSum = header[36..<40].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    if headerSum != vhdChecksum(header, field: 36..<40) {
      problems.append("dynamic header checksum is wrong")
    }
    let bat = try field(path, at: dataOffset + 16, width: 8)
    let maxEntries = try field(path, at: dataOffset + 28, width: 4)
    blockSize = try field(path, at: dataOffset + 32, width: 4)
    bitmapSize = (blockSize / 4096 + 511) / 512 * 512
    let count = Int((virtualSize + blockSize - 1) / blockSize)
    let table = try readBytes(path, at: bat, count: count * 4)
    var ranges: [(UInt64, UInt64, Int)] = []
    for i in 0..<count {
      let entry = table[i * 4..<i * 4 + 4].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
      guard entry != 0xFFFF_FFFF else { continue }
      let start = entry * 512
      let stop = start + bitmapSize + blockSize
      if start < bat + maxEntries * 4 {
        problems.append("block \(i) at \(hex(start)) lies before the BAT's end")
      }
      // qemu refuses an image whose last block ends past the end of the file.
      if stop > size - 512 { problems.append("block \(i) at \(hex(start)) ends past the footer") }
      blocks[i] = start
      ranges.append((start, stop, i))
    }
    ranges.sort { $0.0 < $1.0 }
    for (a, b) in zip(ranges, ranges.dropFirst()) where b.0 < a.1 {
      problems.append("blocks \(a.2) and \(b.2) overlap")
    }
  }

  /// Whether guest sector `sector`'s bitmap bit is set in `file` (the image's bytes; false when
  /// its block is unallocated).
  func sectorHeld(_ sector: Int, file: [UInt8]) -> Bool {
    let perBlock = Int(blockSize / 512)
    guard perBlock > 0, let start = blocks[sector / perBlock] else { return false }
    let s = sector % perBlock
    let byte = Int(start) + s / 8
    return byte < file.count && file[byte] & (0x80 >> UInt8(s % 8)) != 0
  }
}
