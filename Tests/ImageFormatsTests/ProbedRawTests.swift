import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore

/// A raw image whose format was probed must not become another format through the guest
/// (QEMU's rule for probed raw, `RawLayer.vet`); a stated raw image may.
@Suite struct ProbedRawTests {
  static let size: UInt64 = 1 << 20

  /// A raw image of `size` bytes full of 0x5a.
  static func makeRaw(_ scratch: Scratch, name: String = "disk.img") throws -> String {
    let image = scratch.file(name)
    try run("truncate", ["-s", "\(size)", image])
    try Qemu.io(image, format: "raw", ["write -P 0x5a 0 \(size)"])
    return image
  }

  /// The first sector of an empty image of `format` made by qemu-img, with its options.
  static func firstSector(_ format: String, options: [String] = [], _ scratch: Scratch) throws -> [UInt8] {
    let image = scratch.file("magic-\(format)-\(options.count)")
    try Qemu.create(image, format: format, size: "1M", options: options)
    return try fileBytes(image, at: 0, count: 512)
  }

  static func writable(_ image: String, stated: Bool = false) throws -> LayerChain {
    try openChain(image, OpenOptions(format: stated ? RawDriver.self : nil, writable: true))
  }

  /// The first sector of a qcow2, vmdk, vhdx, vpc, vdi and parallels image, written over sector 0
  /// of a probed raw image, is refused (EPERM) naming the format, and the file does not change.
  @Test(arguments: ["qcow2", "vmdk", "vhdx", "vpc", "vdi", "parallels"])
  func aFormatHeaderOverSectorZeroIsRefused(_ format: String) throws {
    let scratch = try Scratch("probedraw")
    defer { scratch.remove() }
    let image = try Self.makeRaw(scratch)
    let header = try Self.firstSector(format, scratch)
    let before = try fileBytes(image, at: 0, count: Int(Self.size))
    let chain = try Self.writable(image)
    #expect((chain.top as? RawLayer)?.probedBy != nil)
    expectVDiskError(.notPermitted, [image, "probe as \(format)", "--format raw"]) {
      _ = try header.withUnsafeBytes { try chain.write($0, at: 0) }
    }
    // Longer writes that start before or cover the sector are judged the same way.
    let long = header + [UInt8](repeating: 0x11, count: 8192)
    expectVDiskError(.notPermitted, ["probe as \(format)"]) {
      _ = try long.withUnsafeBytes { try chain.write($0, at: 0) }
    }
    try chain.flush()
    #expect(try fileBytes(image, at: 0, count: Int(Self.size)) == before)
    #expect(try FormatRegistry.standard.probe(try ImageFile.open(image)) == RawDriver.self)
  }

  /// The magic of formats qemu-img cannot create (cloop's preamble, Bochs' header, a Parallels
  /// bundle's descriptor) is refused the same way.
  @Test(arguments: [
    ("cloop", "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"),
    ("bochs", "Bochs Virtual HD Image\0\0\0\0\0\0\0\0\0\0Redolog\0"),
    ("parallels", "<?xml version='1.0' encoding='UTF-8'?>\n<Parallels_disk_image Version=\"1.0\">"),
  ])
  func aTextMagicOverSectorZeroIsRefused(_ format: String, _ magic: String) throws {
    let scratch = try Scratch("probedraw")
    defer { scratch.remove() }
    let image = try Self.makeRaw(scratch)
    let chain = try Self.writable(image)
    expectVDiskError(.notPermitted, [image, "probe as \(format)"]) {
      _ = try Array(magic.utf8).withUnsafeBytes { try chain.write($0, at: 0) }
    }
    #expect(try FormatRegistry.standard.probe(try ImageFile.open(image)) == RawDriver.self)
  }

  /// A write of part of sector 0 is judged on the merged sector: the rest of a qcow2 header is
  /// harmless alone, its magic then is not; the same magic over other bytes stays harmless
  /// elsewhere in the image.
  @Test func partialWritesAreJudgedOnTheMergedSector() throws {
    let scratch = try Scratch("probedraw")
    defer { scratch.remove() }
    let image = try Self.makeRaw(scratch)
    let header = try Self.firstSector("qcow2", scratch)
    let chain = try Self.writable(image)
    let rest = Array(header[4...])
    _ = try rest.withUnsafeBytes { try chain.write($0, at: 4) }
    let magic = Array(header[0..<4])
    expectVDiskError(.notPermitted, ["probe as qcow2"]) {
      _ = try magic.withUnsafeBytes { try chain.write($0, at: 0) }
    }
    // Two bytes at a time: the second pair completes the magic.
    _ = try Array(magic[0..<2]).withUnsafeBytes { try chain.write($0, at: 0) }
    expectVDiskError(.notPermitted, ["probe as qcow2"]) {
      _ = try Array(magic[2..<4]).withUnsafeBytes { try chain.write($0, at: 2) }
    }
    // Outside what probing reads, the same bytes are guest data like any other.
    _ = try header.withUnsafeBytes { try chain.write($0, at: 64 << 10) }
    try chain.flush()
    #expect(try fileBytes(image, at: 4, count: 508) == rest)
    #expect(try fileBytes(image, at: 0, count: 4) == Array(magic[0..<2]) + [0x5a, 0x5a])
    #expect(try fileBytes(image, at: 64 << 10, count: 512) == header)
    #expect(try FormatRegistry.standard.probe(try ImageFile.open(image)) == RawDriver.self)
  }

  /// Harmless writes to sector 0 (an MBR) land; a fixed VHD footer written as the last sector
  /// is refused (probing reads the tail too), and so is a shrink that would make it the last
  /// sector.
  @Test func harmlessWritesLandAndTheTailIsGuardedToo() throws {
    let scratch = try Scratch("probedraw")
    defer { scratch.remove() }
    let image = try Self.makeRaw(scratch)
    let chain = try Self.writable(image)
    var mbr = [UInt8](repeating: 0, count: 512)
    for i in 0..<446 { mbr[i] = UInt8(truncatingIfNeeded: i &* 7) }
    mbr[510] = 0x55
    mbr[511] = 0xAA
    _ = try mbr.withUnsafeBytes { try chain.write($0, at: 0) }
    try chain.discard(at: 512, length: 3584, mode: .punchHole)

    let fixed = scratch.file("fixed.vhd")
    try Qemu.create(fixed, format: "vpc", size: "1M", options: ["subformat=fixed"])
    let footer = try fileBytes(fixed, at: try fileLength(fixed) - 512, count: 512)
    expectVDiskError(.notPermitted, ["probe as vpc"]) {
      _ = try footer.withUnsafeBytes { try chain.write($0, at: Self.size - 512) }
    }
    // Away from the end it is data; cutting the disk there would expose it as the footer.
    _ = try footer.withUnsafeBytes { try chain.write($0, at: Self.size - 4096) }
    expectVDiskError(.notPermitted, ["resize", "probe as vpc"]) {
      try chain.resize(to: Self.size - 3584, allowShrink: true)
    }
    try chain.resize(to: Self.size - 1024, allowShrink: true)
    try chain.flush()
    #expect(try fileBytes(image, at: 0, count: 512) == mbr)
    #expect(try fileBytes(image, at: 512, count: 3584) == [UInt8](repeating: 0, count: 3584))
    #expect(try fileLength(image) == Self.size - 1024)
    #expect(try FormatRegistry.standard.probe(try ImageFile.open(image)) == RawDriver.self)
  }

  /// A DMG trailer ("koly" at the start of the last 512 bytes) written as the last sector is
  /// refused like a VHD footer; a sector merely containing "koly" elsewhere lands.
  @Test func aDMGTrailerAsTheLastSectorIsRefused() throws {
    let scratch = try Scratch("probedraw")
    defer { scratch.remove() }
    let image = try Self.makeRaw(scratch)
    let chain = try Self.writable(image)
    let koly = Array("koly".utf8) + [UInt8](repeating: 0, count: 508)
    expectVDiskError(.notPermitted, ["probe as dmg"]) {
      _ = try koly.withUnsafeBytes { try chain.write($0, at: Self.size - 512) }
    }
    _ = try koly.withUnsafeBytes { try chain.write($0, at: Self.size - 1024) }
    let shifted = [UInt8](repeating: 0, count: 4) + koly.prefix(508)
    _ = try shifted.withUnsafeBytes { try chain.write($0, at: Self.size - 512) }
    try chain.flush()
    #expect(try FormatRegistry.standard.probe(try ImageFile.open(image)) == RawDriver.self)
  }

  /// With the format stated, the guest may write any header; the next probe sees it.
  @Test func statedRawAllowsAFormatHeader() throws {
    let scratch = try Scratch("probedraw")
    defer { scratch.remove() }
    let image = try Self.makeRaw(scratch)
    let header = try Self.firstSector("qcow2", scratch)
    let chain = try Self.writable(image, stated: true)
    #expect((chain.top as? RawLayer)?.probedBy == nil)
    _ = try header.withUnsafeBytes { try chain.write($0, at: 0) }
    try chain.flush()
    #expect(try fileBytes(image, at: 0, count: 512) == header)
    #expect(try FormatRegistry.standard.probe(try ImageFile.open(image)).name == "qcow2")
  }

  /// A format only the registry knows is covered without an edit: its magic may not be made,
  /// by a write or by a discard (which lands as zeros through the same judgement).
  @Test func aRegistryFormatIsCoveredAndDiscardsAreJudged() throws {
    let scratch = try Scratch("probedraw")
    defer { scratch.remove() }
    let image = try Self.makeRaw(scratch)
    let registry = FormatRegistry(drivers: [ZeroMagicDriver.self, RawDriver.self])
    let chain = try openChain(image, OpenOptions(writable: true, registry: registry))
    _ = try Array("ZMAG".utf8).withUnsafeBytes { try chain.write($0, at: 4) }
    expectVDiskError(.notPermitted, ["probe as zeromagic"]) {
      try chain.discard(at: 0, length: 4, mode: .zeroRange)
    }
    try chain.flush()
    #expect(try fileBytes(image, at: 0, count: 8) == [0x5a, 0x5a, 0x5a, 0x5a] + Array("ZMAG".utf8))
  }
}

/// A format whose magic is four zero bytes followed by "ZMAG" (only zeros can complete it).
enum ZeroMagicDriver: FormatDriver {
  static let name = "zeromagic"
  static let summary = "test format"
  static func matches(_ probe: ProbeBytes) -> Bool { probe.head(has: [0, 0, 0, 0] + Array("ZMAG".utf8)) }
  static func plan(_ file: ImageFile, context: PlanContext) throws -> LayerPlan {
    throw VDiskError.unsupported(file.path, "test format")
  }
}
