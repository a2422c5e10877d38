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

/// Guest ranges holding data, neighbours merged (host offsets ignored: qemu splits per block).
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
/// virtual size, the whole disk in odd chunks, random ranges, and (unless `compareMap` is false)
/// the data ranges and SEEK_DATA/SEEK_HOLE answers against `qemu-img map`.
func expectSameAsQemu(
  _ image: String, format: String, scratch: Scratch, compareMap: Bool = true,
  sourceLocation: SourceLocation = #_sourceLocation
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

  guard compareMap else { return }
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

/// The VHD checksum (one's complement of the byte sum, the field itself counted as zero).
func vhdChecksum(_ bytes: [UInt8], field: Range<Int>) -> UInt32 {
  var sum: UInt32 = 0
  for (i, b) in bytes.enumerated() where !field.contains(i) { sum &+= UInt32(b) }
  return ~sum
}

func bigEndian(_ value: UInt64, width: Int) -> [UInt8] {
  (0..<width).map { UInt8(truncatingIfNeeded: value >> UInt64(8 * (width - 1 - $0))) }
}

/// Reads `count` bytes of `path` at `offset`.
func readBytes(_ path: String, at offset: UInt64, count: Int) throws -> [UInt8] {
  let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
  defer { try? handle.close() }
  try handle.seek(toOffset: offset)
  return [UInt8](try handle.read(upToCount: count) ?? Data())
}

func fileSize(_ path: String) throws -> UInt64 {
  (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.uint64Value ?? 0
}

/// Recomputes the checksum of the footer at `offset` (0 or file size - 512).
func refreshFooterChecksum(_ path: String, at offset: UInt64) throws {
  var footer = try readBytes(path, at: offset, count: 512)
  footer.replaceSubrange(64..<68, with: [0, 0, 0, 0])
  try patch(path, at: offset + 64, UInt64(vhdChecksum(footer, field: 64..<68)), width: 4)
}

/// Recomputes the checksum of the dynamic disk header at `offset`.
func refreshHeaderChecksum(_ path: String, at offset: UInt64 = 512) throws {
  let header = try readBytes(path, at: offset, count: 1024)
  try patch(path, at: offset + 36, UInt64(vhdChecksum(header, field: 36..<40)), width: 4)
}

/// Patches a footer field in both footers of a dynamic VHD (or the only one of a fixed VHD) and
/// refreshes their checksums.
func patchFooters(_ path: String, at field: UInt64, bytes: [UInt8]) throws {
  let end = try fileSize(path) - 512
  var offsets = [end]
  if try readBytes(path, at: 0, count: 8) == Array("conectix".utf8) { offsets.append(0) }
  for offset in offsets {
    try patch(path, at: offset + field, bytes: bytes)
    try refreshFooterChecksum(path, at: offset)
  }
}
