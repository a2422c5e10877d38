import DMG
import Foundation
import TestSupport
import Testing
import VDiskCore

/// The chunk kinds QEMU 7.2 cannot read (ADC, bzip2) checked against an independent decoder:
/// Debian's dmg2img (1.6.7), which converts UDIF images with zlib, bzip2 and ADC chunks (and
/// zero, ignore and raw ones) to a raw image, from the property list or the resource fork. It
/// writes the chunks one after the other as each table lists them, so these images list every
/// partition's chunks in sector order with no gaps, partitions in order from sector 0.
@Suite struct DMG2ImgTests {
  /// The raw image dmg2img makes of `image`.
  static func dmg2img(_ image: String) throws -> [UInt8] {
    let out = image + ".img"
    let r = try run("dmg2img", ["-s", "-i", image, "-o", out], check: false)
    #expect(r.status == 0, "dmg2img: \(r.stdout)\(r.stderr)")
    return [UInt8](try Data(contentsOf: URL(fileURLWithPath: out)))
  }

  /// Partitions of chunks of `kinds` in turn (`sectors` each), contiguous from sector 0, split
  /// into `partitions` tables; the builder and the content it must read as.
  static func image(
    _ kinds: [UInt32], sectors: UInt64, partitions: Int = 1, seed: UInt64, scratch: Scratch
  ) throws -> (DMGBuilder, [UInt8]) {
    var expected: [UInt8] = []
    var specs: [DMGBuilder.PartitionSpec] = []
    let perPartition = (kinds.count + partitions - 1) / partitions
    var sector: UInt64 = 0
    for (p, start) in stride(from: 0, to: kinds.count, by: perPartition).enumerated() {
      var spec = DMGBuilder.PartitionSpec(firstSector: sector, chunks: [])
      var local: UInt64 = 0
      for (i, kind) in kinds[start..<min(kinds.count, start + perPartition)].enumerated() {
        let zero = kind == DMGBuilder.zero || kind == DMGBuilder.ignore
        let data =
          zero
          ? [UInt8](repeating: 0, count: Int(sectors) * 512)
          : DMGTests.content(sectors: sectors, seed: seed &* 31 &+ UInt64(p * 100 + i))
        spec.chunks.append(try DMGTests.chunk(kind, at: local, data, scratch: scratch))
        expected += data
        local += sectors
      }
      spec.chunks.append(.init(type: DMGBuilder.terminator, sector: local, sectorCount: 0))
      specs.append(spec)
      sector += local
    }
    var builder = DMGBuilder()
    builder.partitions = specs
    builder.sectorCount = sector
    return (builder, expected)
  }

  static let mixed: [UInt32] = [
    DMGBuilder.adc, DMGBuilder.bzip2, DMGBuilder.zlib, DMGBuilder.raw, DMGBuilder.adc, DMGBuilder.zero,
    DMGBuilder.bzip2, DMGBuilder.ignore, DMGBuilder.adc, DMGBuilder.zlib, DMGBuilder.bzip2, DMGBuilder.adc,
  ]

  /// (name, kinds, sectors per chunk, partitions, resource fork)
  static let cases: [(String, [UInt32], UInt64, Int, Bool)] = [
    ("adc", [UInt32](repeating: DMGBuilder.adc, count: 6), 256, 1, false),
    ("bzip2", [UInt32](repeating: DMGBuilder.bzip2, count: 5), 300, 1, false),
    ("mixed", mixed, 200, 3, false),
    ("mixed-rsrc", mixed, 128, 2, true),
  ]

  @Test(arguments: cases.indices)
  func sameAsDmg2img(_ index: Int) throws {
    let (name, kinds, sectors, partitions, fork) = Self.cases[index]
    let scratch = try Scratch("dmg2img-\(name)")
    defer { scratch.remove() }
    var (builder, expected) = try Self.image(
      kinds, sectors: sectors, partitions: partitions, seed: UInt64(index + 1), scratch: scratch)
    builder.resourceFork = fork
    let image = scratch.file("\(name).dmg")
    try DMGTests.write(builder.build(), image)
    FuzzSeeds.keep(image, target: "FuzzDMG")
    let theirs = try Self.dmg2img(image)
    let ours = try readAll(openChain(image))
    #expect(theirs.count == expected.count)
    let d1 = firstDifference(theirs, expected)
    #expect(d1 == nil, "dmg2img differs from the content at \(d1.map { hex($0) } ?? "")")
    let d2 = firstDifference(ours, theirs)
    #expect(d2 == nil, "vdiskfs differs from dmg2img at \(d2.map { hex($0) } ?? "")")
  }

  /// ADC streams with every op at its limits: 128-byte literal runs, two-byte matches of 3 to 18
  /// bytes at distances up to 1024, three-byte matches of 4 to 67 bytes up to 65536 back, and
  /// matches that overlap their own output.
  @Test func adcOpLimitsAgreeWithDmg2img() throws {
    let scratch = try Scratch("dmg2img-adc-ops")
    defer { scratch.remove() }
    var rng = SplitMix64(seed: 77)
    var data = (0..<70_000).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
    var stream: [UInt8] = [0x80 | 127] + data[0..<128]
    var out = Array(data[0..<128])
    func match(_ length: Int, _ distance: Int) {
      if length <= 18, distance <= 1024, length >= 3 {
        stream += [UInt8((length - 3) << 2) | UInt8((distance - 1) >> 8), UInt8((distance - 1) & 0xFF)]
      } else {
        stream += [0x40 | UInt8(length - 4), UInt8((distance - 1) >> 8), UInt8((distance - 1) & 0xFF)]
      }
      for _ in 0..<length { out.append(out[out.count - distance]) }
    }
    func literal(_ n: Int) {
      let bytes = (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
      stream += [0x80 | UInt8(n - 1)] + bytes
      out += bytes
    }
    match(3, 1)
    match(18, 1024 > out.count ? out.count : 1024)
    match(67, 1)
    match(4, 2)
    while out.count < 66_000 { literal(128) }
    match(67, 65536)
    match(40, 65536)
    match(18, 3)
    match(5, 1024)
    literal(1)
    while out.count % 512 != 0 { literal(min(128, 512 - out.count % 512)) }
    data = out
    var spec = DMGBuilder.PartitionSpec(firstSector: 0, chunks: [])
    spec.chunks.append(
      .init(type: DMGBuilder.adc, sector: 0, sectorCount: UInt64(data.count / 512), stored: stream))
    spec.chunks.append(.init(type: DMGBuilder.terminator, sector: UInt64(data.count / 512), sectorCount: 0))
    var builder = DMGBuilder()
    builder.partitions = [spec]
    builder.sectorCount = UInt64(data.count / 512)
    let image = scratch.file("ops.dmg")
    try DMGTests.write(builder.build(), image)
    let theirs = try Self.dmg2img(image)
    #expect(theirs == data)
    #expect(try readAll(openChain(image)) == data)
  }
}

/// One mount through the real binary against dmg2img's output.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct DMG2ImgMountTests {
  @Test func mountedMixedImageMatchesDmg2img() throws {
    let scratch = try Scratch("dmg2img-mount")
    defer { scratch.remove() }
    let (builder, _) = try DMG2ImgTests.image(
      DMG2ImgTests.mixed, sectors: 160, partitions: 2, seed: 9, scratch: scratch)
    let image = scratch.file("m.dmg")
    try DMGTests.write(builder.build(), image)
    _ = try DMG2ImgTests.dmg2img(image)
    try withReadOnlyMount(image, in: scratch) { mnt in
      let r = try run("cmp", [mnt + "/disk.raw", image + ".img"], check: false)
      #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
    }
  }
}
