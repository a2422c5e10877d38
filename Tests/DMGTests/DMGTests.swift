import DMG
import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore

/// DMG images built in test code with every chunk kind read back as the content they were built
/// from (and as qemu reads them, for the kinds QEMU 7.2 reads), and hostile images refused
/// with one clear error.
@Suite struct DMGTests {
  /// `sectors` of content: patterned runs and incompressible noise.
  static func content(sectors: UInt64, seed: UInt64) -> [UInt8] {
    var rng = SplitMix64(seed: seed)
    var bytes = [UInt8](repeating: 0, count: Int(sectors) * 512)
    var i = 0
    while i < bytes.count {
      let n = min(bytes.count - i, Int(1 + rng.next() % 3000))
      if rng.next() % 2 == 0 {
        for k in i..<i + n { bytes[k] = UInt8(truncatingIfNeeded: k &* 7 &+ Int(seed)) }
      } else {
        for k in i..<i + n { bytes[k] = UInt8(truncatingIfNeeded: rng.next()) }
      }
      i += n
    }
    return bytes
  }

  /// A chunk of `type` holding `data` (stored raw, compressed, or nothing for zero kinds).
  static func chunk(
    _ type: UInt32, at sector: UInt64, _ data: [UInt8], scratch: Scratch
  ) throws -> DMGBuilder.ChunkSpec {
    let stored: [UInt8]
    switch type {
    case DMGBuilder.raw: stored = data
    case DMGBuilder.zlib: stored = try DMGBuilder.compress(data, "zlib", scratch: scratch)
    case DMGBuilder.bzip2: stored = try DMGBuilder.compress(data, "bz2", scratch: scratch)
    case DMGBuilder.lzma: stored = try DMGBuilder.compress(data, "lzma", scratch: scratch)
    case DMGBuilder.adc: stored = DMGBuilder.adcEncode(data)
    default: stored = []
    }
    return .init(type: type, sector: sector, sectorCount: UInt64(data.count / 512), stored: stored)
  }

  /// An image of two partitions listed last first, chunks out of order, every kind, a comment
  /// and terminators, gaps between chunks; and the content it must read as.
  static func everyKind(_ scratch: Scratch) throws -> (DMGBuilder, [UInt8]) {
    var expected = [UInt8](repeating: 0, count: 1100 * 512)
    func data(_ sector: UInt64, _ count: UInt64, zero: Bool = false) -> [UInt8] {
      let d = zero ? [UInt8](repeating: 0, count: Int(count) * 512) : content(sectors: count, seed: sector)
      expected.replaceSubrange(Int(sector) * 512..<Int(sector + count) * 512, with: d)
      return d
    }
    var p0 = DMGBuilder.PartitionSpec(firstSector: 0, chunks: [])
    p0.chunks.append(try chunk(DMGBuilder.zlib, at: 0, data(0, 256), scratch: scratch))
    p0.chunks.append(.init(type: DMGBuilder.comment, sector: 0, sectorCount: 0, stored: Array("hi".utf8)))
    p0.chunks.append(try chunk(DMGBuilder.adc, at: 420, data(420, 80), scratch: scratch))
    p0.chunks.append(try chunk(DMGBuilder.raw, at: 256, data(256, 44), scratch: scratch))
    p0.chunks.append(.init(type: DMGBuilder.zero, sector: 300, sectorCount: 100))
    p0.chunks.append(.init(type: DMGBuilder.ignore, sector: 400, sectorCount: 20))
    p0.chunks.append(.init(type: DMGBuilder.terminator, sector: 500, sectorCount: 0))
    var p1 = DMGBuilder.PartitionSpec(firstSector: 600, chunks: [])
    p1.chunks.append(try chunk(DMGBuilder.lzma, at: 200, data(800, 100), scratch: scratch))
    p1.chunks.append(try chunk(DMGBuilder.bzip2, at: 0, data(600, 200), scratch: scratch))
    p1.chunks.append(try chunk(DMGBuilder.zlib, at: 320, data(920, 60), scratch: scratch))
    p1.chunks.append(.init(type: DMGBuilder.terminator, sector: 400, sectorCount: 0))
    // 500..<600, 900..<920 and 980..<1100 are in no chunk.
    var builder = DMGBuilder()
    builder.partitions = [p1, p0]
    builder.sectorCount = 1100
    builder.dataForkOffset = 1024
    return (builder, expected)
  }

  static func write(_ bytes: [UInt8], _ path: String) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
  }

  @Test func everyChunkKindReadsAsBuilt() throws {
    let scratch = try Scratch("dmg-kinds")
    defer { scratch.remove() }
    let (builder, expected) = try Self.everyKind(scratch)
    let image = scratch.file("all.dmg")
    try Self.write(builder.build(), image)
    FuzzSeeds.keep(image, target: "FuzzDMG")
    #expect(try FormatRegistry.standard.probe(ImageFile.open(image)).name == "dmg")
    let chain = try openChain(image)
    #expect(chain.virtualSize == 1100 * 512)
    #expect(try readAll(chain) == expected)
    // Random reads across chunk edges.
    var rng = SplitMix64(seed: 3)
    for _ in 0..<200 {
      let offset = Int(rng.next() % UInt64(expected.count))
      let length = min(expected.count - offset, Int(1 + rng.next() % 150_000))
      #expect(try chain.read(at: UInt64(offset), count: length) == Array(expected[offset..<offset + length]))
    }
    let layer = try #require(chain.top as? DMGLayer)
    #expect(layer.map.partitions == 2)
    #expect(layer.map.chunks.count == 8)
    #expect(
      layer.info.formatSpecific.first { $0.key == "chunk-kinds" }?.value
        == .array(["adc", "bzip2", "lzma", "raw", "zero", "zlib"].map { .string($0) }))
  }

  /// Small sequential reads decode each compressed chunk once.
  @Test func smallReadsDecodeEachChunkOnce() throws {
    let scratch = try Scratch("dmg-cache")
    defer { scratch.remove() }
    let (builder, _) = try Self.everyKind(scratch)
    let image = scratch.file("c.dmg")
    try Self.write(builder.build(), image)
    let chain = try openChain(image)
    let layer = try #require(chain.top as? DMGLayer)
    var position: UInt64 = 0
    while position < chain.virtualSize {
      _ = try chain.read(at: position, count: 4096)
      position += 4096
    }
    #expect(layer.decompressionCount == 5)
  }

  /// The kinds QEMU 7.2 reads (zlib, raw, zero, ignore): the same bytes as `qemu-img convert`.
  static func qemuReadable(_ scratch: Scratch) throws -> String {
    // In sector order: QEMU looks chunks up by binary search over the tables as written.
    var p = DMGBuilder.PartitionSpec(firstSector: 0, chunks: [])
    for i in 0..<2 as Range<UInt64> {
      p.chunks.append(
        try chunk(DMGBuilder.zlib, at: i * 1024, content(sectors: 1024, seed: i + 5), scratch: scratch))
    }
    p.chunks.append(try chunk(DMGBuilder.raw, at: 2048, content(sectors: 300, seed: 1), scratch: scratch))
    p.chunks.append(.init(type: DMGBuilder.zero, sector: 2348, sectorCount: 4000))
    p.chunks.append(.init(type: DMGBuilder.ignore, sector: 6348, sectorCount: 52))
    p.chunks.append(try chunk(DMGBuilder.zlib, at: 6400, content(sectors: 600, seed: 9), scratch: scratch))
    var builder = DMGBuilder()
    builder.partitions = [p]
    builder.sectorCount = 7000
    let image = scratch.file("q.dmg")
    try write(builder.build(), image)
    FuzzSeeds.keep(image, target: "FuzzDMG")
    return image
  }

  @Test func matchesQemu() throws {
    let scratch = try Scratch("dmg-qemu")
    defer { scratch.remove() }
    let image = try Self.qemuReadable(scratch)
    try expectSameAsQemu(image, format: "dmg", scratch: scratch, compareMap: false)
  }

  @Test func writableOpenIsRefused() throws {
    let scratch = try Scratch("dmg-rw")
    defer { scratch.remove() }
    let image = try Self.qemuReadable(scratch)
    expectVDiskError(.readOnly, [image, "read-only"]) { _ = try openChain(image, .init(writable: true)) }
  }

  /// ULMO chunks are one .xz stream (7-Zip's and libmodi's reading of type 0x80000008): the
  /// xz container reads; the same data as a legacy .lzma stream or raw LZMA1 is refused.
  @Test func lzmaChunksAreXZStreams() throws {
    let scratch = try Scratch("dmg-xz")
    defer { scratch.remove() }
    let data = Self.content(sectors: 64, seed: 12)
    let xz = try DMGBuilder.compress(data, "lzma", options: ", format=lzma.FORMAT_XZ", scratch: scratch)
    #expect(Array(xz.prefix(6)) == [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00])
    let alone = try DMGBuilder.compress(data, "lzma", options: ", format=lzma.FORMAT_ALONE", scratch: scratch)
    let raw = try DMGBuilder.compress(
      data, "lzma", options: ", format=lzma.FORMAT_RAW, filters=[{'id': lzma.FILTER_LZMA1}]", scratch: scratch
    )
    var builder = DMGBuilder()
    builder.partitions = [
      .init(
        firstSector: 0,
        chunks: [
          .init(type: DMGBuilder.lzma, sector: 0, sectorCount: 64, stored: xz),
          .init(type: DMGBuilder.lzma, sector: 64, sectorCount: 64, stored: alone),
          .init(type: DMGBuilder.lzma, sector: 128, sectorCount: 64, stored: raw),
        ])
    ]
    builder.sectorCount = 192
    let image = scratch.file("x.dmg")
    try Self.write(builder.build(), image)
    let chain = try openChain(image)
    #expect(try chain.read(at: 0, count: data.count) == data)
    for sector in [64, 128] as [UInt64] {
      expectVDiskError(.corrupt, [image, "DMG lzma chunk", "does not decode to its 32768 bytes"]) {
        _ = try chain.read(at: sector * 512, count: 512)
      }
    }
  }

  @Test func lzfseIsRefusedByName() throws {
    let scratch = try Scratch("dmg-lzfse")
    defer { scratch.remove() }
    var builder = DMGBuilder()
    builder.partitions = [
      .init(
        firstSector: 0,
        chunks: [.init(type: DMGBuilder.lzfse, sector: 0, sectorCount: 8, stored: [1, 2, 3])])
    ]
    builder.sectorCount = 8
    let image = scratch.file("l.dmg")
    try Self.write(builder.build(), image)
    expectVDiskError(.unsupported, [image, "0x80000007 (LZFSE) is not supported", "chunk 0"]) {
      _ = try openChain(image)
    }
  }
}

/// One mount through the real binary: disk.raw must equal the built content (every kind) and
/// qemu's reading (the kinds it reads).
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct DMGMountTests {
  @Test func mountedDiskMatchesContentAndQemu() throws {
    let scratch = try Scratch("dmg-mount")
    defer { scratch.remove() }
    let (builder, expected) = try DMGTests.everyKind(scratch)
    let image = scratch.file("m.dmg")
    try DMGTests.write(builder.build(), image)
    let want = scratch.file("want.raw")
    try DMGTests.write(expected, want)
    try withReadOnlyMount(image, in: scratch) { mnt in
      let r = try run("cmp", [mnt + "/disk.raw", want], check: false)
      #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
    }
    let readable = try DMGTests.qemuReadable(scratch)
    let raw = try Qemu.rawFile(of: readable, format: "dmg", scratch: scratch)
    try withReadOnlyMount(readable, in: scratch) { mnt in
      let r = try run("cmp", [mnt + "/disk.raw", raw], check: false)
      #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
    }
  }
}
