import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore
import VHD

/// Damaged and hostile vpc images: a clear `VDiskError` naming the file and the fault, never a
/// crash, hang or huge allocation.
@Suite struct VHDHostileTests {
  /// A 4 MiB dynamic image with data in both blocks.
  static func dynamicImage(_ scratch: Scratch) throws -> String {
    let image = scratch.file("h.vhd")
    try Qemu.create(image, format: "vpc", size: "4M", options: ["force_size=on"])
    try Qemu.io(image, format: "vpc", ["write -P 0x42 0 4M"])
    return image
  }

  @Test func badChecksumsAndCookies() throws {
    let scratch = try Scratch("vpc-hostile-sum")
    defer { scratch.remove() }
    let fixed = scratch.file("f.vhd")
    try Qemu.create(fixed, format: "vpc", size: "1M", options: ["subformat=fixed"])
    let end = try fileSize(fixed) - 512
    try patch(fixed, at: end + 64, 0x1234_5678, width: 4)
    expectVDiskError(.corrupt, [fixed, "checksum", "0x12345678"]) {
      _ = try openChain(fixed, .init(format: VHDDriver.self))
    }

    // Both footers of a dynamic disk damaged.
    let image = try Self.dynamicImage(scratch)
    try patch(image, at: try fileSize(image) - 512 + 64, 1, width: 4)
    try patch(image, at: 64, 1, width: 4)
    expectVDiskError(.corrupt, [image, "checksum"]) { _ = try openChain(image) }

    let header = scratch.file("hdr.vhd")
    try Qemu.create(header, format: "vpc", size: "4M")
    try patch(header, at: 512 + 36, 0, width: 4)
    expectVDiskError(.corrupt, [header, "dynamic disk header", "checksum"]) { _ = try openChain(header) }
    try patch(header, at: 512, bytes: Array("cxsparsX".utf8))
    try refreshHeaderChecksum(header)
    expectVDiskError(.corrupt, [header, "cxsparse"]) { _ = try openChain(header) }

    let tiny = scratch.file("tiny.vhd")
    try Data(Array("conectix".utf8)).write(to: URL(fileURLWithPath: tiny))
    expectVDiskError(.corrupt, [tiny, "too small"]) { _ = try openChain(tiny, .init(format: VHDDriver.self)) }
  }

  @Test func batAndBlockBounds() throws {
    let scratch = try Scratch("vpc-hostile-bat")
    defer { scratch.remove() }
    let image = try Self.dynamicImage(scratch)
    let original = try readBytes(image, at: 0, count: Int(try fileSize(image)))
    func reset() throws { try Data(original).write(to: URL(fileURLWithPath: image)) }

    try patch(image, at: 512 + 16, 1 << 40, width: 8)
    try refreshHeaderChecksum(image)
    expectVDiskError(.corrupt, [image, "BAT", "past end of file"]) { _ = try openChain(image) }

    try reset()
    try patch(image, at: 512 + 28, 0xFFFF_FFFF, width: 4)
    try refreshHeaderChecksum(image)
    expectVDiskError(.corrupt, [image, "BAT of 4294967295 entries", "past end of file"]) {
      _ = try openChain(image)
    }

    try reset()
    try patch(image, at: 512 + 28, 1, width: 4)
    try refreshHeaderChecksum(image)
    expectVDiskError(.corrupt, [image, "BAT has 1 entries", "needs 2"]) { _ = try openChain(image) }

    for blockSize: UInt64 in [3 << 20, 1 << 30, 256, 0] {
      try reset()
      try patch(image, at: 512 + 32, blockSize, width: 4)
      try refreshHeaderChecksum(image)
      expectVDiskError(.corrupt, [image, "block size \(blockSize)"]) { _ = try openChain(image) }
    }

    // A block whose BAT entry points past the end of the file: opening works, reading it fails.
    try reset()
    let bat = try field(image, at: 512 + 16, width: 8)
    try patch(image, at: bat + 4, 0x7FFF_FFF0, width: 4)
    let chain = try openChain(image)
    #expect(try chain.read(at: 0, count: 4096).allSatisfy { $0 == 0x42 })
    expectVDiskError(.corrupt, [image, "block 1", "beyond end of file"]) {
      _ = try chain.read(at: 3 << 20, count: 512)
    }
  }

  @Test func sizesBeyondTheFormatOrTheFile() throws {
    let scratch = try Scratch("vpc-hostile-size")
    defer { scratch.remove() }
    let image = try Self.dynamicImage(scratch)
    try patchFooters(image, at: 48, bytes: bigEndian(3 << 40, width: 8))
    expectVDiskError(.unsupported, [image, "larger than"]) { _ = try openChain(image) }

    let fixed = scratch.file("f.vhd")
    try Qemu.create(fixed, format: "vpc", size: "1M", options: ["subformat=fixed", "force_size=on"])
    try patchFooters(fixed, at: 48, bytes: bigEndian(2 << 20, width: 8))
    expectVDiskError(.corrupt, [fixed, "fixed VHD of 2097152 bytes"]) { _ = try openChain(fixed) }

    try patchFooters(fixed, at: 60, bytes: bigEndian(9, width: 4))
    expectVDiskError(.unsupported, [fixed, "disk type 9"]) { _ = try openChain(fixed) }
  }

  /// Random byte flips in the metadata: whatever happens is a VDiskError or a successful read.
  @Test func randomMetadataCorruptionNeverCrashes() throws {
    let scratch = try Scratch("vpc-hostile-fuzz")
    defer { scratch.remove() }
    let image = try Self.dynamicImage(scratch)
    let original = try readBytes(image, at: 0, count: Int(try fileSize(image)))
    var rng = SplitMix64(seed: 77)
    let metadata = 512 + 1024 + 512  // footer copy, dynamic header, BAT sector
    for _ in 0..<150 {
      var bytes = original
      for _ in 0..<(1 + rng.next() % 4) {
        let i = Int(rng.next() % UInt64(metadata))
        bytes[i] = UInt8(truncatingIfNeeded: rng.next())
      }
      // Keep the header checksums right half of the time so that the flips reach the parser.
      if rng.next() % 2 == 0 {
        let h = Array(bytes[512..<1536])
        bytes.replaceSubrange(
          512 + 36..<512 + 40, with: bigEndian(UInt64(vhdChecksum(h, field: 36..<40)), width: 4))
      }
      bytes.replaceSubrange(bytes.count - 512..<bytes.count, with: bytes[0..<512])
      let f = Array(bytes[0..<512])
      let sum = bigEndian(UInt64(vhdChecksum(f, field: 64..<68)), width: 4)
      bytes.replaceSubrange(64..<68, with: sum)
      bytes.replaceSubrange(bytes.count - 512 + 64..<bytes.count - 512 + 68, with: sum)
      try Data(bytes).write(to: URL(fileURLWithPath: image))
      do {
        let chain = try openChain(image, .init(format: VHDDriver.self))
        if chain.virtualSize <= 64 << 20 { _ = try readAll(chain) }
        _ = try chain.seekData(from: 0)
      } catch is VDiskError {
      }
    }
  }
}
