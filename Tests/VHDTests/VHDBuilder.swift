import Foundation
import TestSupport

/// Writes a dynamic or differencing VHD from scratch, per vhd.asciidoc: footer copy, dynamic
/// header, BAT, parent locator data, blocks (sector bitmap + data), footer.
struct VHDBuilder {
  var virtualSize: UInt64
  var blockSize: UInt32 = 512 << 10
  var diskType: UInt32 = 4
  var uniqueID: [UInt8] = (0..<16).map { UInt8(0xA0 + $0) }
  var parentUUID: [UInt8] = [UInt8](repeating: 0, count: 16)
  var parentName = ""
  /// (platform code, locator bytes)
  var locators: [(String, [UInt8])] = []
  /// Allocated blocks: index → (sector bitmap bytes, block data of blockSize bytes).
  var blocks: [Int: (bitmap: [UInt8], data: [UInt8])] = [:]

  var entries: Int { Int((virtualSize + UInt64(blockSize) - 1) / UInt64(blockSize)) }
  var bitmapSize: Int { (Int(blockSize) / 4096 + 511) / 512 * 512 }

  static func utf16LE(_ s: String) -> [UInt8] { s.utf16.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] } }
  static func utf16BE(_ s: String) -> [UInt8] { s.utf16.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] } }

  func footer() -> [UInt8] {
    var f = [UInt8](repeating: 0, count: 512)
    func put(_ offset: Int, _ bytes: [UInt8]) {
      f.replaceSubrange(offset..<offset + bytes.count, with: bytes)
    }
    put(0, Array("conectix".utf8))
    put(8, bigEndian(2, width: 4))
    put(12, bigEndian(0x10000, width: 4))
    put(16, bigEndian(512, width: 8))
    put(28, Array("win ".utf8))
    put(36, Array("Wi2k".utf8))
    put(40, bigEndian(virtualSize, width: 8))
    put(48, bigEndian(virtualSize, width: 8))
    put(56, bigEndian(0xFFFF_10FF, width: 4))
    put(60, bigEndian(UInt64(diskType), width: 4))
    put(68, uniqueID)
    put(64, bigEndian(UInt64(vhdChecksum(f, field: 64..<68)), width: 4))
    return f
  }

  func write(to path: String) throws {
    var file = [UInt8](repeating: 0, count: 1536)
    let batOffset = 1536
    let batBytes = (entries * 4 + 511) / 512 * 512
    file += [UInt8](repeating: 0xFF, count: batBytes)
    var locatorEntries: [UInt8] = []
    for (code, data) in locators {
      let offset = file.count
      let space = (data.count + 511) / 512 * 512
      file += data + [UInt8](repeating: 0, count: space - data.count)
      locatorEntries +=
        Array(code.utf8) + bigEndian(UInt64(space / 512), width: 4)
        + bigEndian(UInt64(data.count), width: 4) + [0, 0, 0, 0] + bigEndian(UInt64(offset), width: 8)
    }
    for index in blocks.keys.sorted() {
      guard let block = blocks[index] else { continue }
      let sector = file.count / 512
      file.replaceSubrange(
        batOffset + 4 * index..<batOffset + 4 * index + 4, with: bigEndian(UInt64(sector), width: 4))
      file += block.bitmap + [UInt8](repeating: 0, count: bitmapSize - block.bitmap.count) + block.data
    }
    var h = [UInt8](repeating: 0, count: 1024)
    func put(_ offset: Int, _ bytes: [UInt8]) {
      h.replaceSubrange(offset..<offset + bytes.count, with: bytes)
    }
    put(0, Array("cxsparse".utf8))
    put(8, bigEndian(UInt64.max, width: 8))
    put(16, bigEndian(UInt64(batOffset), width: 8))
    put(24, bigEndian(0x10000, width: 4))
    put(28, bigEndian(UInt64(entries), width: 4))
    put(32, bigEndian(UInt64(blockSize), width: 4))
    put(40, parentUUID)
    put(64, Array(Self.utf16BE(parentName).prefix(512)))
    put(576, locatorEntries)
    put(36, bigEndian(UInt64(vhdChecksum(h, field: 36..<40)), width: 4))
    let f = footer()
    file.replaceSubrange(0..<512, with: f)
    file.replaceSubrange(512..<1536, with: h)
    file += f
    try Data(file).write(to: URL(fileURLWithPath: path))
    FuzzSeeds.keep(path, target: "FuzzVHD")
  }
}
