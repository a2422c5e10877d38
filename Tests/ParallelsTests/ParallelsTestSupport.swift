import Foundation
import TestSupport
import VDiskCore

func littleEndian(_ value: UInt64, width: Int) -> [UInt8] {
  (0..<width).map { UInt8(truncatingIfNeeded: value >> UInt64(8 * $0)) }
}

/// Overwrites `width` bytes at `offset` of `path` with `value` in little-endian order.
func patchLE(_ path: String, at offset: UInt64, _ value: UInt64, width: Int) throws {
  try patch(path, at: offset, bytes: littleEndian(value, width: width))
}

/// A little-endian field of `path`.
func fieldLE(_ path: String, at offset: UInt64, width: Int) throws -> UInt64 {
  try field(path, at: offset, width: width).byteSwapped >> UInt64(64 - 8 * width)
}

/// The size of the file at `path`.
func fileSize(_ path: String) throws -> UInt64 {
  (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.uint64Value ?? 0
}

/// Writes a Parallels expandable image from scratch (QEMU docs/interop/parallels.txt): the
/// header, the BAT (in sectors for "WithoutFreeSpace", in clusters for "WithouFreSpacExt") and
/// the clusters in the order of `slots`.
struct ParallelsBuilder {
  var clustersSignature = true
  var sectors: UInt64
  var clusterSectors: UInt32 = 128
  /// Per guest cluster: the index into `slots` of its data, or nil for a cluster not allocated.
  var map: [Int?]
  /// Data of each stored cluster (`clusterSectors` × 512 bytes each), in file order.
  var slots: [[UInt8]]
  var inUse: UInt32 = 0

  var clusterSize: Int { Int(clusterSectors) * 512 }

  /// Where the data area starts: the BAT's end rounded up to a cluster, as QEMU creates it.
  var dataOffset: Int { (64 + map.count * 4 + clusterSize - 1) / clusterSize * clusterSize }

  func bytes() -> [UInt8] {
    var file = Array((clustersSignature ? "WithouFreSpacExt" : "WithoutFreeSpace").utf8)
    file += littleEndian(2, width: 4) + littleEndian(16, width: 4) + littleEndian(32, width: 4)
    file += littleEndian(UInt64(clusterSectors), width: 4) + littleEndian(UInt64(map.count), width: 4)
    file += littleEndian(sectors, width: 8) + littleEndian(UInt64(inUse), width: 4)
    file +=
      littleEndian(UInt64(dataOffset / 512), width: 4) + littleEndian(0, width: 4) + littleEndian(0, width: 8)
    for slot in map {
      guard let slot else {
        file += littleEndian(0, width: 4)
        continue
      }
      let host = dataOffset + slot * clusterSize
      file += littleEndian(UInt64(clustersSignature ? host / clusterSize : host / 512), width: 4)
    }
    file += [UInt8](repeating: 0, count: dataOffset - file.count)
    for slot in slots { file += slot }
    return file
  }

  func write(to path: String) throws {
    try Data(bytes()).write(to: URL(fileURLWithPath: path))
    FuzzSeeds.keep(path, target: "FuzzParallels")
  }

  /// The guest bytes the image holds.
  var content: [UInt8] {
    var out: [UInt8] = []
    let size = Int(sectors) * 512
    var cluster = 0
    while out.count < size {
      let length = min(clusterSize, size - out.count)
      if cluster < map.count, let slot = map[cluster] {
        out += slot < slots.count ? Array(slots[slot][0..<length]) : [UInt8](repeating: 0, count: length)
      } else {
        out += [UInt8](repeating: 0, count: length)
      }
      cluster += 1
    }
    return out
  }

  /// `count` clusters of distinct bytes.
  static func patterned(_ count: Int, clusterSize: Int, seed: Int) -> [[UInt8]] {
    (0..<count).map { i in (0..<clusterSize).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i &* 77 &+ seed) } }
  }
}
