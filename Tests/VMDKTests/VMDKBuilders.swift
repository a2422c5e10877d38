import Foundation
import TestSupport

/// Builds what qemu-img cannot make: COWD and seSparse extents, and stream-optimized extents with
/// GD_AT_END and a footer (vmdk.asciidoc, vmdk-sesparse-notes.md).
enum VMDKBuilder {
  /// A COWD extent of `capacity` sectors with `grainSectors`-sector grains holding `grains`
  /// (grain index → bytes, at most one grain each), stored in index order. Returns the guest
  /// bytes it holds.
  @discardableResult
  static func cowd(_ path: String, capacity: UInt64, grainSectors: UInt64, grains: [Int: [UInt8]]) throws
    -> [UInt8]
  {
    let grainSize = Int(grainSectors * 512)
    let perTable = 4096
    let gdEntries = Int((capacity + UInt64(perTable) * grainSectors - 1) / (UInt64(perTable) * grainSectors))
    var file = LEBytes(count: 2048)
    file.put(Array("COWD".utf8), at: 0)
    file.put(1, at: 4, width: 4)
    file.put(3, at: 8, width: 4)
    file.put(capacity, at: 12, width: 4)
    file.put(grainSectors, at: 16, width: 4)
    file.put(4, at: 20, width: 4)
    file.put(UInt64(gdEntries), at: 24, width: 4)
    let gdOffset = 2048
    file.put([UInt8](repeating: 0, count: gdEntries * 4), at: gdOffset)
    file.padToSector()
    var tables: [Int: Int] = [:]  // GD index → byte offset of its GT
    for index in grains.keys.sorted() where tables[index / perTable] == nil {
      let at = file.bytes.count
      tables[index / perTable] = at
      file.put(UInt64(at / 512), at: gdOffset + index / perTable * 4, width: 4)
      file.put([UInt8](repeating: 0, count: perTable * 4), at: at)
    }
    var guest = [UInt8](repeating: 0, count: Int(capacity * 512))
    for index in grains.keys.sorted() {
      guard let data = grains[index], let table = tables[index / perTable] else { continue }
      let at = file.bytes.count
      file.put(data + [UInt8](repeating: 0, count: grainSize - data.count), at: at)
      file.put(UInt64(at / 512), at: table + index % perTable * 4, width: 4)
      guest.replaceSubrange(index * grainSize..<index * grainSize + data.count, with: data)
    }
    try file.write(to: path)
    FuzzSeeds.keep(path, target: "FuzzVMDK")
    return guest
  }

  /// A grain-table entry of seSparse type `type` (0…3); for type 3, `grain` is the grain number
  /// with its halves swapped as the format stores them.
  static func seEntry(type: UInt64, grain: UInt64 = 0) -> UInt64 {
    guard type == 3 else { return type << 60 }
    return 3 << 60 | (grain & 0xfff) << 48 | grain >> 12
  }

  /// An seSparse extent of `capacity` bytes. `tables`: GD index → (GT pool slot, entries by GT
  /// index). `grains`: grain number → 4 KiB of data in the grain pool.
  static func seSparse(
    _ path: String, capacity: UInt64, tables: [Int: (slot: Int, entries: [Int: UInt64])],
    grains: [UInt64: [UInt8]]
  ) throws {
    let slots = (tables.values.map(\.slot).max() ?? 0) + 1
    var file = LEBytes(count: 512)
    // Sectors: 0 header, 1 volatile header, 2 journal header, 3 journal, 4 GD, 5… GT pool.
    let gtPool: UInt64 = 5
    let bitmap = gtPool + UInt64(slots) * 64
    let grainPool = bitmap + 2
    let grainCount = (grains.keys.max() ?? 0) + 1
    let fields: [UInt64] = [
      0xCAFE_BABE, 0x0000_0002_0000_0001, capacity / 512, 8, 64, 0, 0, 0, 0, 0,
      1, 1, 2, 1, 3, 1, 4, 1, gtPool, UInt64(slots) * 64, bitmap, 1, bitmap + 1, 1, grainPool, grainCount * 8,
    ]
    for (i, value) in fields.enumerated() { file.put(value, at: i * 8, width: 8) }
    file.put(0xCAFE_CAFE, at: 512, width: 8)
    file.put([UInt8](repeating: 0, count: Int(grainPool * 512) - 520), at: 520)
    for (index, table) in tables {
      file.put(0x1000_0000_0000_0000 | UInt64(table.slot), at: 4 * 512 + index * 8, width: 8)
      for (slot, entry) in table.entries {
        file.put(entry, at: Int(gtPool) * 512 + table.slot * 32768 + slot * 8, width: 8)
      }
    }
    file.put([UInt8](repeating: 0, count: Int(grainCount) * 4096), at: Int(grainPool) * 512)
    for (grain, data) in grains { file.put(data, at: Int(grainPool) * 512 + Int(grain) * 4096) }
    try file.write(to: path)
    FuzzSeeds.keep(path, target: "FuzzVMDK")
  }

  /// Rewrites a qemu-made stream-optimized extent the way VMware streams them: header with
  /// GD_AT_END, grains, a grain-table marker before each grain table, a grain-directory marker,
  /// then footer marker, footer and end-of-stream marker.
  static func streamWithFooter(from source: String, to path: String) throws {
    let input = LEBytes(bytes: try readFile(source))
    let capacity = input.u64(12)
    let grainSectors = input.u64(20)
    let descriptorSectors = input.u64(36)
    let gtes = Int(input.u32(44))
    let gdOffset = Int(input.u64(56)) * 512
    let gdEntries = Int((capacity + UInt64(gtes) * grainSectors - 1) / (UInt64(gtes) * grainSectors))
    var header = Array(input.bytes[0..<512])
    var h = LEBytes(bytes: header)
    h.put(UInt64.max, at: 56, width: 8)
    h.put(0, at: 48, width: 8)
    h.put(1 + descriptorSectors, at: 64, width: 8)  // overHead: grains follow the descriptor
    header = h.bytes
    var file = LEBytes(bytes: header)
    file.put(Array(input.bytes[512..<Int(1 + descriptorSectors) * 512]), at: 512)
    var newGD = [UInt64](repeating: 0, count: gdEntries)
    var newTables: [Int: [UInt64]] = [:]
    for index in 0..<gdEntries {
      let gt = Int(input.u32(gdOffset + index * 4)) * 512
      guard gt != 0 else { continue }
      var table = [UInt64](repeating: 0, count: gtes)
      for slot in 0..<gtes {
        let grain = Int(input.u32(gt + slot * 4)) * 512
        guard grain != 0 else { continue }
        let size = Int(input.u32(grain + 8))
        let at = file.bytes.count
        file.put(Array(input.bytes[grain..<grain + 12 + size]), at: at)
        file.padToSector()
        table[slot] = UInt64(at / 512)
      }
      newTables[index] = table
    }
    func marker(_ value: UInt64, type: UInt64) {
      let at = file.bytes.count
      file.put(value, at: at, width: 8)
      file.put(type, at: at + 12, width: 4)
      file.padToSector()
    }
    for index in newTables.keys.sorted() {
      guard let table = newTables[index] else { continue }
      marker(UInt64(gtes * 4 + 511) / 512, type: 1)
      newGD[index] = UInt64(file.bytes.count / 512)
      let at = file.bytes.count
      for (slot, entry) in table.enumerated() { file.put(entry, at: at + slot * 4, width: 4) }
      file.padToSector()
    }
    marker(UInt64(gdEntries * 4 + 511) / 512, type: 2)
    let gdSector = UInt64(file.bytes.count / 512)
    let gdAt = file.bytes.count
    for (index, entry) in newGD.enumerated() { file.put(entry, at: gdAt + index * 4, width: 4) }
    file.padToSector()
    marker(1, type: 3)
    var footer = LEBytes(bytes: header)
    footer.put(gdSector, at: 56, width: 8)
    file.put(footer.bytes, at: file.bytes.count)
    file.put([UInt8](repeating: 0, count: 512), at: file.bytes.count)  // end-of-stream marker
    try file.write(to: path)
    FuzzSeeds.keep(path, target: "FuzzVMDK")
  }
}

extension LEBytes {
  init(bytes: [UInt8]) {
    self.init(count: 0)
    self.bytes = bytes
  }
}
