import Foundation
import TestSupport
import Testing
import VDiskCore

/// `qemu-img info --output=json -f FORMAT`'s virtual-size.
func qemuVirtualSize(_ image: String, format: String) throws -> UInt64 {
  let json = try Qemu.img("info", "--output=json", "-f", format, image)
  struct Info: Decodable {
    var virtualSize: UInt64
    enum CodingKeys: String, CodingKey { case virtualSize = "virtual-size" }
  }
  return try JSONDecoder().decode(Info.self, from: Data(json.utf8)).virtualSize
}

/// Guest ranges holding data, neighbours merged (host offsets ignored).
func mergedDataRanges(_ ranges: [(UInt64, UInt64)]) -> [Range<UInt64>] {
  var out: [Range<UInt64>] = []
  for (start, length) in ranges {
    if let last = out.last, last.upperBound == start {
      out[out.count - 1] = last.lowerBound..<(start + length)
    } else {
      out.append(start..<(start + length))
    }
  }
  return out
}

/// Requires that vdiskfs reads `image` exactly as `qemu-img convert -f FORMAT -O raw` does:
/// virtual size, the whole disk in odd chunks, random ranges, data ranges and
/// SEEK_DATA/SEEK_HOLE answers against `qemu-img map`.
func expectSameAsQemu(
  _ image: String, format: String, scratch: Scratch, sourceLocation: SourceLocation = #_sourceLocation
) throws {
  let expected = try Qemu.rawContent(of: image, format: format, scratch: scratch)
  let chain = try openChain(image)
  #expect(chain.virtualSize == UInt64(expected.count), sourceLocation: sourceLocation)
  #expect(chain.virtualSize == (try qemuVirtualSize(image, format: format)), sourceLocation: sourceLocation)
  let all = try readAll(chain)
  let d = firstDifference(all, expected)
  #expect(d == nil, "first difference at \(d.map { hex($0) } ?? "")", sourceLocation: sourceLocation)

  var rng = SplitMix64(seed: UInt64(expected.count))
  for _ in 0..<300 where !expected.isEmpty {
    let offset = rng.next() % UInt64(expected.count)
    let length = Int(1 + rng.next() % 200_000)
    let bytes = try chain.read(at: offset, count: length)
    let want = expected[Int(offset)..<min(expected.count, Int(offset) + length)]
    if let d = firstDifference(bytes, Array(want)) {
      Issue.record(
        "read of \(length) at \(hex(offset)) differs at +\(hex(d))", sourceLocation: sourceLocation)
      break
    }
  }

  var ours: [(UInt64, UInt64)] = []
  try chain.forEachStatus { if $0.isData { ours.append(($0.offset, $0.length)) } }
  let theirs = try Qemu.map(image, format: format).filter(\.data).map { ($0.start, $0.length) }
  let mine = mergedDataRanges(ours)
  let qemu = mergedDataRanges(theirs)
  #expect(mine == qemu, "data ranges \(mine) vs qemu \(qemu)", sourceLocation: sourceLocation)
  var hole: UInt64 = 0
  for range in qemu {
    #expect(try chain.seekData(from: hole) == range.lowerBound, sourceLocation: sourceLocation)
    #expect(try chain.seekHole(from: range.lowerBound) == range.upperBound, sourceLocation: sourceLocation)
    hole = range.upperBound
  }
  if hole < chain.virtualSize {
    #expect(try chain.seekData(from: hole) == nil, sourceLocation: sourceLocation)
  }
}

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
