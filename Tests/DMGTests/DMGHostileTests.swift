import DMG
import Foundation
import TestSupport
import Testing
import VDiskCore

/// Hostile DMG images: every offset, length and count the trailer, the property list and the
/// mish tables give is bounded; each fault is one clear error, never a crash or a huge
/// allocation.
@Suite struct DMGHostileTests {
  /// A one-partition image of `chunks` over `sectors` sectors.
  static func image(
    _ scratch: Scratch, _ chunks: [DMGBuilder.ChunkSpec], sectors: UInt64 = 64, xml: [UInt8]? = nil
  ) throws -> String {
    var builder = DMGBuilder()
    builder.partitions = [.init(firstSector: 0, chunks: chunks)]
    builder.sectorCount = sectors
    let path = scratch.file("h-\(UUID().uuidString.prefix(8)).dmg")
    try DMGTests.write(builder.build(xmlOverride: xml), path)
    return path
  }

  static func zlibChunk(_ scratch: Scratch, sectors: UInt64, at sector: UInt64 = 0) throws
    -> DMGBuilder.ChunkSpec
  {
    try DMGTests.chunk(
      DMGBuilder.zlib, at: sector, DMGTests.content(sectors: sectors, seed: 4), scratch: scratch)
  }

  @Test func badTrailer() throws {
    let scratch = try Scratch("dmg-koly")
    defer { scratch.remove() }
    let image = try Self.image(scratch, [try Self.zlibChunk(scratch, sectors: 64)])
    let original = try Data(contentsOf: URL(fileURLWithPath: image))
    let koly = UInt64(original.count - 512)
    let cases: [(UInt64, UInt64, [String])] = [
      (24, koly + 1, ["data fork", "beyond the trailer"]),
      (32, koly + 1, ["data fork", "beyond the trailer"]),
      (216, koly - 10, ["property list", "beyond the trailer"]),
      (216, UInt64.max - 5, ["property list", "beyond the trailer"]),
      (224, 17 << 20, ["property list of 17825792 bytes is larger than 16 MiB"]),
      (492, UInt64.max, ["sector count", "too large"]),
      (492, 10, ["beyond the disk's 10 sectors"]),
    ]
    for (offset, value, fragments) in cases {
      try original.write(to: URL(fileURLWithPath: image))
      try patch(image, at: koly + offset, value, width: 8)
      expectVDiskError(.corrupt, [image] + fragments) { _ = try openChain(image) }
    }
    try original.write(to: URL(fileURLWithPath: image))
    try patch(image, at: koly + 224, 0, width: 8)
    expectVDiskError(.corrupt, [image, "neither an XML property list nor a resource fork"]) {
      _ = try openChain(image)
    }
    // A file too small for a trailer, and a trailer without its magic, opened as DMG (the
    // trailer's own checks are behind the probe; `KolyTrailer` alone must still refuse them).
    let tiny = scratch.file("tiny.dmg")
    try Data(Array("koly".utf8)).write(to: URL(fileURLWithPath: tiny))
    expectVDiskError(.corrupt, [tiny, "does not have the dmg magic"]) {
      _ = try openChain(tiny, .init(format: DMGDriver.self))
    }
    expectVDiskError(.corrupt, [tiny, "too small for a DMG trailer"]) {
      _ = try KolyTrailer(file: ImageFile.open(tiny))
    }
    try original.write(to: URL(fileURLWithPath: image))
    try patch(image, at: koly, bytes: Array("kolx".utf8))
    expectVDiskError(.corrupt, [image, "no DMG \"koly\" trailer"]) {
      _ = try KolyTrailer(file: ImageFile.open(image))
    }
  }

  @Test func plistBombsAndNesting() throws {
    let scratch = try Scratch("dmg-plist")
    defer { scratch.remove() }
    let chunk = try Self.zlibChunk(scratch, sectors: 8)
    let laughs = """
      <?xml version="1.0"?>
      <!DOCTYPE plist [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>
      <plist><dict><key>&b;</key></dict></plist>
      """
    let deep =
      "<plist>" + String(repeating: "<dict>", count: 5000) + String(repeating: "</dict>", count: 5000)
      + "</plist>"
    let wide = "<plist><dict>" + String(repeating: "<key/>", count: 200_000) + "</dict></plist>"
    let cases: [(String, [String])] = [
      (laughs, ["document type declarations are not allowed"]),
      (deep, ["nested deeper than 16"]),
      (wide, ["more than 100000 elements"]),
      ("<plist><dict></dict></plist>", ["no resource-fork dictionary"]),
      ("<plist><dict><key>resource-fork</key><dict></dict></dict></plist>", ["no blkx array"]),
      (
        "<plist><dict><key>resource-fork</key><dict><key>blkx</key><array><dict><key>Data</key><data>bWlzaA=*</data></dict></array></dict></dict></plist>",
        ["blkx entry 0: Data is not valid base64"]
      ),
      (
        "<plist><dict><key>resource-fork</key><dict><key>blkx</key><array><dict><key>Data</key><data>bWlzaA==</data></dict></array></dict></dict></plist>",
        ["blkx entry 0: no mish block table"]
      ),
      ("<plist><dict>", ["document ends inside"]),
    ]
    for (xml, fragments) in cases {
      let image = try Self.image(scratch, [chunk], xml: Array(xml.utf8))
      expectVDiskError(.corrupt, [image] + fragments) { _ = try openChain(image) }
    }
  }

  @Test func badChunkTables() throws {
    let scratch = try Scratch("dmg-mish")
    defer { scratch.remove() }
    let z = try Self.zlibChunk(scratch, sectors: 16)
    var beyond = z
    beyond.offset = 1 << 40
    var long = z
    long.length = 1 << 30
    var huge = z
    huge.sectorCount = UInt64.max - 3
    var big = z
    big.sectorCount = 200_000
    var empty = z
    empty.length = 0
    let raw = DMGBuilder.ChunkSpec(type: DMGBuilder.raw, sector: 0, sectorCount: 4, stored: [1, 2, 3])
    let unknown = DMGBuilder.ChunkSpec(type: 0x1234, sector: 0, sectorCount: 4)
    let cases: [([DMGBuilder.ChunkSpec], UInt64, [String])] = [
      ([beyond], 64, ["blkx entry 0", "chunk 0", "beyond the trailer"]),
      ([long], 64, ["blkx entry 0", "exceeds 64 MiB"]),
      ([huge], 64, ["chunk 0", "beyond the disk's 64 sectors"]),
      ([big], 1 << 20, ["compressed chunk 0", "for 200000 sectors", "exceeds 64 MiB"]),
      ([empty], 64, ["compressed chunk 0 of 0 bytes"]),
      ([raw], 64, ["raw chunk 0 stores 3 bytes for 4 sectors"]),
      ([unknown], 64, ["chunk 0 has unknown type 0x1234"]),
      (
        [z, try Self.zlibChunk(scratch, sectors: 16, at: 8)], 64,
        ["DMG chunks overlap: sectors 0–15 and 8–23"]
      ),
    ]
    for (chunks, sectors, fragments) in cases {
      let image = try Self.image(scratch, chunks, sectors: sectors)
      expectVDiskError(.corrupt, [image] + fragments) { _ = try openChain(image) }
    }
    // A chunk count larger than the table holds.
    let image = try Self.image(scratch, [z])
    let xml = try String(contentsOfFile: image, encoding: .isoLatin1)
    #expect(xml.contains("<data>"))
    var table = DMGBuilder.mish(.init(firstSector: 0, chunks: [z]), offsets: [0])
    table.replaceSubrange(200..<204, with: DMGBuilder.be32(1000))
    let counted = try Self.image(scratch, [z], xml: DMGBuilder.plist([table]))
    expectVDiskError(.corrupt, [counted, "1000 chunks do not fit in a table of 244 bytes"]) {
      _ = try openChain(counted)
    }
  }

  /// Streams that decode to more (or less) than their chunk's sectors fail that chunk's reads
  /// alone, having written no more than the chunk.
  @Test(arguments: [DMGBuilder.zlib, DMGBuilder.bzip2, DMGBuilder.lzma, DMGBuilder.adc])
  func decompressionBombs(type: UInt32) throws {
    let scratch = try Scratch("dmg-bomb")
    defer { scratch.remove() }
    let good = try DMGTests.chunk(type, at: 0, DMGTests.content(sectors: 8, seed: 1), scratch: scratch)
    // 4 MiB of zeros claimed as 8 sectors, and 8 sectors of data claimed as 16.
    var bomb = try DMGTests.chunk(type, at: 8, [UInt8](repeating: 0, count: 4 << 20), scratch: scratch)
    bomb.sectorCount = 8
    var short = try DMGTests.chunk(type, at: 16, DMGTests.content(sectors: 8, seed: 2), scratch: scratch)
    short.sectorCount = 16
    let image = try Self.image(scratch, [good, bomb, short], sectors: 32)
    let chain = try openChain(image)
    #expect(try chain.read(at: 0, count: 4096) == DMGTests.content(sectors: 8, seed: 1))
    expectVDiskError(.corrupt, [image, "chunk", "does not decode to its 4096 bytes"]) {
      _ = try chain.read(at: 8 * 512, count: 512)
    }
    expectVDiskError(.corrupt, [image, "chunk", "does not decode to its 8192 bytes"]) {
      _ = try chain.read(at: 16 * 512 + 100, count: 10)
    }
  }

  @Test func randomCorruptionNeverCrashes() throws {
    let scratch = try Scratch("dmg-random")
    defer { scratch.remove() }
    let (builder, _) = try DMGTests.everyKind(scratch)
    let original = builder.build()
    let image = scratch.file("r.dmg")
    var rng = SplitMix64(seed: 11)
    for round in 0..<300 {
      var bytes = original
      for _ in 0..<(1 + rng.next() % 4) {
        // The trailer, the property list, or the data fork.
        let region = rng.next() % 3
        let at =
          region == 0
          ? bytes.count - 512 + Int(rng.next() % 512)
          : region == 1
            ? bytes.count - 512 - 1 - Int(rng.next() % 4000) : Int(rng.next() % UInt64(bytes.count - 4600))
        bytes[at] = UInt8(truncatingIfNeeded: rng.next())
      }
      try DMGTests.write(bytes, image)
      do {
        let chain = try openChain(image, .init(format: DMGDriver.self))
        if chain.virtualSize <= 64 << 20 { _ = try readAll(chain, seed: UInt64(round)) }
      } catch is VDiskError {
      }
    }
  }
}
