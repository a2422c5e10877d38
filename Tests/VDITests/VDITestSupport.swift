import Foundation
import TestSupport
import Testing
import VDiskCore

func littleEndian(_ value: UInt64, width: Int) -> [UInt8] {
  (0..<width).map { UInt8(truncatingIfNeeded: value >> UInt64(8 * $0)) }
}

/// Overwrites `width` bytes at `offset` of `path` with `value` in little-endian order.
func patchLE(_ path: String, at offset: UInt64, _ value: UInt64, width: Int) throws {
  try patch(path, at: offset, bytes: littleEndian(value, width: width))
}

/// Writes a VDI from scratch (vdi.md): v1.1 (with `blockExtra` bytes before each block) or
/// legacy v0, with the given block map and slot contents.
struct VDIBuilder {
  var version1 = true
  var diskSize: UInt64
  var blockSize: UInt32 = 1 << 20
  var blockExtra: UInt32 = 0
  /// Block map entries (slot numbers or 0xFFFFFFFF / 0xFFFFFFFE).
  var map: [UInt32]
  /// Data of each slot, blockSize bytes each.
  var slots: [[UInt8]]

  func bytes() -> [UInt8] {
    var h = [UInt8](repeating: 0, count: 512)
    func put(_ offset: Int, _ bytes: [UInt8]) {
      h.replaceSubrange(offset..<offset + bytes.count, with: bytes)
    }
    put(0, Array("<<< vdiskfs test VDI >>>\n".utf8))
    put(0x40, littleEndian(0xBEDA_107F, width: 4))
    let mapOffset: Int
    let dataOffset: Int
    if version1 {
      put(0x44, littleEndian(0x0001_0001, width: 4))
      put(0x48, littleEndian(0x180, width: 4))
      put(0x4C, littleEndian(1, width: 4))
      mapOffset = 512
      dataOffset = mapOffset + (map.count * 4 + 511) / 512 * 512
      put(0x154, littleEndian(UInt64(mapOffset), width: 4))
      put(0x158, littleEndian(UInt64(dataOffset), width: 4))
      put(0x168, littleEndian(512, width: 4))
      put(0x170, littleEndian(diskSize, width: 8))
      put(0x178, littleEndian(UInt64(blockSize), width: 4))
      put(0x17C, littleEndian(UInt64(blockExtra), width: 4))
      put(0x180, littleEndian(UInt64(map.count), width: 4))
      put(0x184, littleEndian(UInt64(slots.count), width: 4))
    } else {
      put(0x48, littleEndian(1, width: 4))
      put(0x160, littleEndian(diskSize, width: 8))
      put(0x168, littleEndian(UInt64(blockSize), width: 4))
      put(0x16C, littleEndian(UInt64(map.count), width: 4))
      put(0x170, littleEndian(UInt64(slots.count), width: 4))
      mapOffset = 0x1A4
      dataOffset = mapOffset + map.count * 4
      h = Array(h[0..<0x1A4])
    }
    var file = h
    file += map.flatMap { littleEndian(UInt64($0), width: 4) }
    file += [UInt8](repeating: 0, count: dataOffset - file.count)
    for slot in slots {
      file += [UInt8](repeating: 0xEE, count: Int(blockExtra)) + slot
    }
    return file
  }

  func write(to path: String) throws { try Data(bytes()).write(to: URL(fileURLWithPath: path)) }

  /// The guest bytes the image holds (its size rounded up to whole sectors, as qemu does).
  var content: [UInt8] {
    var out: [UInt8] = []
    let size = Int(diskSize + 511) / 512 * 512
    for (i, entry) in map.enumerated() {
      let length = min(Int(blockSize), size - i * Int(blockSize))
      guard length > 0 else { break }
      out += entry < 0xFFFF_FFFE ? Array(slots[Int(entry)][0..<length]) : [UInt8](repeating: 0, count: length)
    }
    return out
  }
}

/// A little-endian u32 of a file.
func u32LE(_ path: String, at offset: UInt64) throws -> UInt32 {
  let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
  defer { try? handle.close() }
  try handle.seek(toOffset: offset)
  let data = try handle.read(upToCount: 4) ?? Data()
  return data.reversed().reduce(0) { $0 << 8 | UInt32($1) }
}

/// Size of a file in bytes.
func fileSize(_ path: String) throws -> UInt64 {
  (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.uint64Value ?? 0
}
