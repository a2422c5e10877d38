import Foundation
import TestSupport

func littleEndian(_ value: UInt64, width: Int) -> [UInt8] {
  (0..<width).map { UInt8(truncatingIfNeeded: value >> UInt64(8 * $0)) }
}

/// Writes a Bochs growing redolog image from its layout (Bochs' redolog, as QEMU's bochs.c reads
/// it): a 512-byte header, the catalog, then per slot its bitmap (whole sectors) and its extent.
struct BochsBuilder {
  var version1 = false
  var diskSize: UInt64
  var extentSize: UInt32 = 4096
  /// Bytes of bitmap per extent (one bit per sector; Bochs makes it as small as it can be).
  var bitmapSize: UInt32 = 1
  /// Per extent: its slot, or nil (0xFFFFFFFF). Extra entries past the disk are allowed.
  var catalog: [UInt32?]
  /// Per slot: which sectors are stored, and the data of the whole extent.
  var slots: [(stored: Set<Int>, data: [UInt8])]
  var subtype = "Growing"

  var bitmapBytes: Int { (Int(bitmapSize) + 511) / 512 * 512 }

  func bytes() -> [UInt8] {
    func field(_ text: String, _ width: Int) -> [UInt8] {
      Array(text.utf8) + [UInt8](repeating: 0, count: width - text.utf8.count)
    }
    var header = field("Bochs Virtual HD Image", 32) + field("Redolog", 16) + field(subtype, 16)
    header += littleEndian(version1 ? 0x0001_0000 : 0x0002_0000, width: 4) + littleEndian(512, width: 4)
    header += littleEndian(UInt64(catalog.count), width: 4) + littleEndian(UInt64(bitmapSize), width: 4)
    header += littleEndian(UInt64(extentSize), width: 4)
    header +=
      version1
      ? littleEndian(diskSize, width: 8) : littleEndian(0, width: 4) + littleEndian(diskSize, width: 8)
    var file = header + [UInt8](repeating: 0, count: 512 - header.count)
    for entry in catalog { file += littleEndian(UInt64(entry ?? 0xFFFF_FFFF), width: 4) }
    for slot in slots {
      var bitmap = [UInt8](repeating: 0, count: bitmapBytes)
      for sector in slot.stored { bitmap[sector / 8] |= 1 << UInt8(sector % 8) }
      file += bitmap + slot.data
    }
    return file
  }

  func write(to path: String) throws {
    try Data(bytes()).write(to: URL(fileURLWithPath: path))
    FuzzSeeds.keep(path, target: "FuzzBochs")
  }

  /// The guest bytes: stored sectors of allocated extents, zeros elsewhere.
  var content: [UInt8] {
    let size = Int(diskSize / 512 * 512)
    var out = [UInt8](repeating: 0, count: size)
    let extent = Int(extentSize)
    for (index, entry) in catalog.enumerated() {
      guard let entry else { continue }
      let slot = slots[Int(entry)]
      for sector in slot.stored {
        let start = index * extent + sector * 512
        guard start < size else { continue }
        out.replaceSubrange(start..<start + 512, with: slot.data[sector * 512..<(sector + 1) * 512])
      }
    }
    return out
  }

  /// A builder with `extents` extents, every other one allocated in reverse slot order, each with
  /// a scatter of stored sectors.
  static func scattered(extents: Int, extentSize: UInt32, seed: UInt64, version1: Bool = false)
    -> BochsBuilder
  {
    var rng = SplitMix64(seed: seed)
    let sectors = Int(extentSize) / 512
    var catalog: [UInt32?] = []
    var slots: [(stored: Set<Int>, data: [UInt8])] = []
    let allocated = (0..<extents).filter { $0 % 2 == 0 || $0 == extents - 1 }
    for _ in allocated {
      var stored = Set<Int>()
      for s in 0..<sectors where rng.next() % 3 != 0 { stored.insert(s) }
      let base = UInt8(truncatingIfNeeded: rng.next())
      slots.append((stored, (0..<Int(extentSize)).map { UInt8(truncatingIfNeeded: $0 &* 11) &+ base }))
    }
    for index in 0..<extents {
      if let k = allocated.firstIndex(of: index) {
        catalog.append(UInt32(allocated.count - 1 - k))
      } else {
        catalog.append(nil)
      }
    }
    return BochsBuilder(
      version1: version1, diskSize: UInt64(extents) * UInt64(extentSize) - 300, extentSize: extentSize,
      bitmapSize: UInt32((sectors + 7) / 8), catalog: catalog, slots: slots)
  }
}
