import Foundation
import TestSupport
import Testing
import VDiskCore

/// A growable little-endian byte image for building VMDK structures in tests.
struct LEBytes {
  var bytes: [UInt8]

  init(count: Int) { bytes = [UInt8](repeating: 0, count: count) }

  mutating func put(_ value: UInt64, at offset: Int, width: Int) {
    if offset + width > bytes.count { bytes += [UInt8](repeating: 0, count: offset + width - bytes.count) }
    for i in 0..<width { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> UInt64(8 * i)) }
  }

  mutating func put(_ data: [UInt8], at offset: Int) {
    if offset + data.count > bytes.count {
      bytes += [UInt8](repeating: 0, count: offset + data.count - bytes.count)
    }
    bytes.replaceSubrange(offset..<offset + data.count, with: data)
  }

  /// Pads to a whole number of sectors.
  mutating func padToSector() {
    let rest = bytes.count % 512
    if rest != 0 { bytes += [UInt8](repeating: 0, count: 512 - rest) }
  }

  func u32(_ offset: Int) -> UInt64 {
    (0..<4).reduce(0) { $0 | UInt64(bytes[offset + $1]) << UInt64(8 * $1) }
  }
  func u64(_ offset: Int) -> UInt64 {
    (0..<8).reduce(0) { $0 | UInt64(bytes[offset + $1]) << UInt64(8 * $1) }
  }

  func write(to path: String) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
  }
}

func readFile(_ path: String) throws -> [UInt8] {
  try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
}

/// Overwrites `width` bytes at `offset` of `path` with `value` in little-endian order.
func patchLE(_ path: String, at offset: UInt64, _ value: UInt64, width: Int) throws {
  try patch(path, at: offset, bytes: (0..<width).map { UInt8(truncatingIfNeeded: value >> UInt64(8 * $0)) })
}

/// Replaces the first occurrence of `old` in the file's first MiB by `new` (same length).
func replaceText(_ path: String, _ old: String, _ new: String) throws {
  let bytes = try readFile(path)
  let needle = Array(old.utf8)
  guard needle.count == new.utf8.count else {
    Issue.record("replacement of \(old) must keep its length")
    return
  }
  let limit = min(bytes.count, 1 << 20) - needle.count
  guard limit >= 0, let at = (0...limit).first(where: { Array(bytes[$0..<$0 + needle.count]) == needle })
  else {
    Issue.record("\(old) not found in \(path)")
    return
  }
  try patch(path, at: UInt64(at), bytes: Array(new.utf8))
}

/// The value of `key=` in the descriptor text of `path` (embedded or standalone).
func descriptorValue(_ path: String, _ key: String) throws -> String? {
  let text = String(decoding: try readFile(path).prefix(1 << 16).map { $0 == 0 ? 0x0a : $0 }, as: UTF8.self)
  for line in text.split(separator: "\n") where line.hasPrefix(key + "=") {
    return String(line.dropFirst(key.count + 1)).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
  }
  return nil
}

/// Requires that every range qemu-img map calls data (and not zero) is data in the chain, and
/// every range qemu calls not data is no data in the chain (vmdk maps differ in zero vs
/// unallocated and in how flat-file holes count, so only these two facts are compared).
func expectSameDataRanges(
  _ image: String, _ chain: LayerChain, sourceLocation: SourceLocation = #_sourceLocation
) throws {
  for entry in try Qemu.map(image) {
    var position = entry.start
    let end = entry.start + entry.length
    while position < end {
      let status = try chain.status(at: position, maxLength: end - position)
      if entry.data && !entry.zero {
        #expect(
          status.isData, "qemu says data at \(hex(position)), vdiskfs \(status)",
          sourceLocation: sourceLocation)
      } else if !entry.data {
        #expect(
          !status.isData, "qemu says no data at \(hex(position)), vdiskfs \(status)",
          sourceLocation: sourceLocation)
      }
      position += status.length
    }
  }
  // SEEK_DATA from 0 lands where qemu's first data range starts.
  let firstData = try Qemu.map(image).first { $0.data && !$0.zero }?.start
  if let firstData, try Qemu.map(image).first(where: { $0.data })?.start == firstData {
    #expect(try chain.seekData(from: 0) == firstData, sourceLocation: sourceLocation)
  }
}

/// Compares `count` random reads and the given ranges of the chain with a raw file.
func expectRangesMatch(
  _ chain: LayerChain, raw: String, ranges: [(UInt64, Int)], random count: Int, seed: UInt64,
  sourceLocation: SourceLocation = #_sourceLocation
) throws {
  let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: raw))
  defer { try? handle.close() }
  var rng = SplitMix64(seed: seed)
  var all = ranges
  for _ in 0..<count {
    let length = Int(1 + rng.next() % (256 << 10))
    all.append((rng.next() % (chain.virtualSize - UInt64(length)), length))
  }
  for (offset, length) in all {
    try handle.seek(toOffset: offset)
    let expected = [UInt8](try handle.read(upToCount: length) ?? Data())
    let actual = try chain.read(at: offset, count: length)
    let difference = firstDifference(actual, expected)
    #expect(
      difference == nil,
      "read of \(length) at \(hex(offset)) differs at +\(difference.map { hex($0) } ?? "")",
      sourceLocation: sourceLocation)
  }
}

/// A deterministic pattern of `count` bytes (not all one value) for known-content images.
func pattern(_ seed: UInt8, count: Int) -> [UInt8] {
  (0..<count).map { UInt8(truncatingIfNeeded: Int(seed) &* 31 &+ $0 / 512 &+ ($0 & 7)) | 1 }
}

/// Replaces `old` by `new` in the descriptor embedded in a sparse extent: the descriptor text is
/// rewritten up to its NUL padding, which absorbs a longer text (the padding must hold it).
func replaceInDescriptor(_ path: String, _ old: String, _ new: String) throws {
  let bytes = try readFile(path)
  let marker = Array("# Disk DescriptorFile".utf8)
  let limit = min(bytes.count, 1 << 20) - marker.count
  guard limit >= 0, let start = (0...limit).first(where: { Array(bytes[$0..<$0 + marker.count]) == marker })
  else {
    Issue.record("no embedded descriptor in \(path)")
    return
  }
  let end = bytes[start...].firstIndex(of: 0) ?? bytes.count
  let text = String(decoding: bytes[start..<end], as: UTF8.self)
  guard text.contains(old) else {
    Issue.record("\(old) not found in the descriptor of \(path)")
    return
  }
  var updated = Array(text.replacingOccurrences(of: old, with: new).utf8)
  let paddingEnd = bytes[end...].firstIndex { $0 != 0 } ?? bytes.count
  guard start + updated.count < paddingEnd else {
    Issue.record("the descriptor of \(path) has no room for the edit")
    return
  }
  updated += [UInt8](repeating: 0, count: max(0, end - start - updated.count))
  try patch(path, at: UInt64(start), bytes: updated)
}
