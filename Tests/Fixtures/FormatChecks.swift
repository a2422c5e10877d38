import Foundation
import Testing
import VDiskCore

/// `qemu-img info --output=json -f FORMAT`'s virtual-size.
public func qemuVirtualSize(_ image: String, format: String) throws -> UInt64 {
  let json = try Qemu.img("info", "--output=json", "-f", format, image)
  struct Info: Decodable {
    var virtualSize: UInt64
    enum CodingKeys: String, CodingKey { case virtualSize = "virtual-size" }
  }
  return try JSONDecoder().decode(Info.self, from: Data(json.utf8)).virtualSize
}

/// Guest ranges holding data, neighbours merged (host offsets ignored: qemu splits per block).
public func mergedDataRanges(_ ranges: [(UInt64, UInt64)]) -> [Range<UInt64>] {
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
public func expectSameAsQemu(
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
