import DMG
import Foundation
import TestSupport
import Testing
import VDiskCore

/// UDIF images whose trailer names no XML property list but a classic resource fork: read as
/// QEMU reads them (its block/dmg.c walks the fork's resources), and hostile forks refused with
/// one clear error.
@Suite struct DMGResourceForkTests {
  /// Two partitions of the kinds QEMU 7.2 reads (zlib, raw, zero, ignore), in sector order, with
  /// their tables in a resource fork.
  static func builder(_ scratch: Scratch) throws -> DMGBuilder {
    var p0 = DMGBuilder.PartitionSpec(firstSector: 0, chunks: [])
    p0.chunks.append(
      try DMGTests.chunk(DMGBuilder.zlib, at: 0, DMGTests.content(sectors: 700, seed: 21), scratch: scratch))
    p0.chunks.append(
      try DMGTests.chunk(DMGBuilder.raw, at: 700, DMGTests.content(sectors: 100, seed: 22), scratch: scratch))
    p0.chunks.append(.init(type: DMGBuilder.zero, sector: 800, sectorCount: 200))
    p0.chunks.append(.init(type: DMGBuilder.terminator, sector: 1000, sectorCount: 0))
    var p1 = DMGBuilder.PartitionSpec(firstSector: 1000, chunks: [])
    p1.chunks.append(.init(type: DMGBuilder.ignore, sector: 0, sectorCount: 24))
    p1.chunks.append(
      try DMGTests.chunk(DMGBuilder.zlib, at: 24, DMGTests.content(sectors: 376, seed: 23), scratch: scratch))
    p1.chunks.append(.init(type: DMGBuilder.terminator, sector: 400, sectorCount: 0))
    var builder = DMGBuilder()
    builder.partitions = [p0, p1]
    builder.sectorCount = 1400
    builder.resourceFork = true
    return builder
  }

  @Test func resourceForkImageMatchesQemu() throws {
    let scratch = try Scratch("dmg-rsrc")
    defer { scratch.remove() }
    let builder = try Self.builder(scratch)
    let image = scratch.file("rsrc.dmg")
    try DMGTests.write(builder.build(), image)
    FuzzSeeds.keep(image, target: "FuzzDMG")
    #expect(try field(image, at: UInt64(try Self.fileSize(image)) - 512 + 224, width: 8) == 0)
    try expectSameAsQemu(image, format: "dmg", scratch: scratch, compareMap: false)
    let chain = try openChain(image)
    let layer = try #require(chain.top as? DMGLayer)
    #expect(layer.map.partitions == 2)
    #expect(layer.info.formatSpecific.first { $0.key == "metadata" }?.value == .string("resource fork"))
    // The same tables in a property list read the same.
    var xml = builder
    xml.resourceFork = false
    let listed = scratch.file("xml.dmg")
    try DMGTests.write(xml.build(), listed)
    let other = try openChain(listed)
    #expect(try readAll(other) == readAll(chain))
    #expect(
      (other.top as? DMGLayer)?.info.formatSpecific.first { $0.key == "metadata" }?.value
        == .string("property list"))
  }

  static func fileSize(_ path: String) throws -> Int {
    (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
  }

  static func be32(_ fork: [UInt8], _ at: Int) -> Int {
    (0..<4).reduce(0) { $0 << 8 | Int(fork[at + $1]) }
  }

  static func put32(_ fork: inout [UInt8], _ at: Int, _ value: Int) {
    fork.replaceSubrange(at..<at + 4, with: DMGBuilder.be32(UInt32(truncatingIfNeeded: value)))
  }

  static func put16(_ fork: inout [UInt8], _ at: Int, _ value: Int) {
    fork[at] = UInt8(truncatingIfNeeded: value >> 8)
    fork[at + 1] = UInt8(truncatingIfNeeded: value)
  }

  /// Where the map starts, and its type list (the builder's layout: the type list at map +28,
  /// 'blkx' first with its reference list 18 bytes into the type list).
  static func map(_ fork: [UInt8]) -> Int { be32(fork, 4) }
  static func blkxReference(_ fork: [UInt8], _ i: Int) -> Int { map(fork) + 28 + 18 + 12 * i }

  @Test func hostileForksAreRefused() throws {
    let scratch = try Scratch("dmg-rsrc-bad")
    defer { scratch.remove() }
    let good = try Self.builder(scratch)
    typealias Patch = (inout [UInt8]) -> Void
    let cases: [(String, Patch, [String])] = [
      ("short", { $0.removeSubrange(10...) }, ["resource fork", "10 bytes are too small for its header"]),
      (
        "data past fork", { Self.put32(&$0, 8, $0.count) },
        ["resource data (offset 256,", "lies outside the fork's"]
      ),
      ("data in header", { Self.put32(&$0, 0, 8) }, ["resource data (offset 8,", "lies outside"]),
      (
        "map past fork", { Self.put32(&$0, 4, Int(UInt32.max)) },
        ["resource map (offset 4294967295,", "lies outside the fork's"]
      ),
      (
        "map over data", { Self.put32(&$0, 4, 300) },
        ["resource data 256..<", "and resource map 300..<", "overlap"]
      ),
      (
        "type list past map", { Self.put16(&$0, Self.map($0) + 24, 0xFFF0) },
        ["type list offset 65520 lies outside the resource map"]
      ),
      (
        "type count past map", { Self.put16(&$0, Self.map($0) + 28, 5000) },
        ["type list of 5001 types runs past the resource map"]
      ),
      (
        "reference count past map", { Self.put16(&$0, Self.map($0) + 28 + 2 + 4, 4000) },
        ["reference list of 4001 'blkx' resources", "runs past the resource map"]
      ),
      (
        "reference list past map", { Self.put16(&$0, Self.map($0) + 28 + 2 + 6, 0xFFFF) },
        ["reference list of 2 'blkx' resources at map offset", "runs past the resource map"]
      ),
      (
        "resource past data", { Self.put32(&$0, Self.blkxReference($0, 1) + 4, 0x50FF_FFF0) },
        ["'blkx' resource 0 at data offset 16777200 lies beyond the", "bytes of resource data"]
      ),
      (
        "resource length past data", { Self.put32(&$0, 256, 1 << 30) },
        ["'blkx' resource -1 of 1073741824 bytes at data offset 0 runs past the"]
      ),
      (
        // Both references name the first resource: its chunks would be read twice.
        "shared resource", { Self.put32(&$0, Self.blkxReference($0, 1) + 4, 0x5000_0000) },
        ["'blkx' resources", "overlap"]
      ),
      (
        // The 'blkx' type listed twice (the second entry's reference list is the first's).
        "type twice",
        {
          let types = Self.map($0) + 28
          $0.replaceSubrange(types + 10..<types + 14, with: Array("blkx".utf8))
          Self.put16(&$0, types + 2 + 8 + 4, 1)
          Self.put16(&$0, types + 2 + 8 + 6, 18)
        },
        ["'blkx' resources -1 and -1 overlap"]
      ),
      (
        "no blkx type",
        {
          let t = Self.map($0) + 28 + 2; $0.replaceSubrange(t..<t + 4, with: Array("blkY".utf8))
        },
        ["no 'blkx' resources"]
      ),
      ("not a mish table", { Self.put32(&$0, 260, 0x6D69_7369) }, ["blkx entry 0: no mish block table"]),
    ]
    for (name, change, fragments) in cases {
      var builder = good
      builder.forkPatch = change
      let image = scratch.file("bad-\(name.replacingOccurrences(of: " ", with: "-")).dmg")
      try DMGTests.write(builder.build(), image)
      expectVDiskError(.corrupt, [image, "DMG"] + fragments) { _ = try openChain(image) }
    }
  }

  /// The trailer's resource fork place is bounded like the property list's.
  @Test func forkPlaceIsBounded() throws {
    let scratch = try Scratch("dmg-rsrc-koly")
    defer { scratch.remove() }
    let image = scratch.file("k.dmg")
    let bytes = try Self.builder(scratch).build()
    let koly = UInt64(bytes.count - 512)
    let cases: [(UInt64, UInt64, [String])] = [
      (40, koly - 10, ["resource fork", "beyond the trailer"]),
      (40, UInt64.max - 5, ["resource fork", "beyond the trailer"]),
      (40, 1 << 40, ["resource fork", "beyond the trailer"]),
      (48, 17 << 20, ["resource fork of 17825792 bytes is larger than 16 MiB"]),
      (48, koly, ["resource fork", "beyond the trailer"]),
    ]
    for (offset, value, fragments) in cases {
      try DMGTests.write(bytes, image)
      try patch(image, at: koly + offset, value, width: 8)
      expectVDiskError(.corrupt, [image] + fragments) { _ = try openChain(image) }
    }
    try DMGTests.write(bytes, image)
    try patch(image, at: koly + 48, 0, width: 8)
    expectVDiskError(.corrupt, [image, "neither an XML property list nor a resource fork"]) {
      _ = try openChain(image)
    }
  }

  /// Random damage to the fork and the trailer never crashes and never allocates beyond the fork.
  @Test func randomForkCorruptionNeverCrashes() throws {
    let scratch = try Scratch("dmg-rsrc-random")
    defer { scratch.remove() }
    let original = try Self.builder(scratch).build()
    let forkStart = (0..<8).reduce(0) { $0 << 8 | Int(original[original.count - 512 + 40 + $1]) }
    let image = scratch.file("r.dmg")
    var rng = SplitMix64(seed: 29)
    for round in 0..<300 {
      var bytes = original
      for _ in 0..<(1 + rng.next() % 4) {
        let at = forkStart + Int(rng.next() % UInt64(bytes.count - 512 - forkStart))
        bytes[at] = UInt8(truncatingIfNeeded: rng.next())
      }
      try DMGTests.write(bytes, image)
      do {
        let chain = try openChain(image, .init(format: DMGDriver.self))
        _ = try readAll(chain, seed: UInt64(round))
      } catch is VDiskError {
      }
    }
  }
}
