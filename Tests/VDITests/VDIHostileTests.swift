import Foundation
import ImageFormats
import TestSupport
import Testing
import VDI
import VDiskCore

/// Damaged and hostile vdi images: a clear `VDiskError` naming the file and the fault.
@Suite struct VDIHostileTests {
  @Test func headerFieldsOutOfBounds() throws {
    let scratch = try Scratch("vdi-hostile")
    defer { scratch.remove() }
    let image = scratch.file("h.vdi")
    try Qemu.create(image, format: "vdi", size: "4M")
    try Qemu.io(image, format: "vdi", ["write -P 0x42 0 4M"])
    let original = try Data(contentsOf: URL(fileURLWithPath: image))
    let cases: [(UInt64, UInt64, Int, VDiskError.Kind, [String])] = [
      (0x154, 0x7FFF_0000, 4, .corrupt, ["block map", "outside the file"]),
      (0x154, 0x100, 4, .corrupt, ["block map", "outside the file"]),
      (0x158, 0x7FFF_0000, 4, .corrupt, ["data offset", "past end of file"]),
      (0x158, 0x200, 4, .corrupt, ["data offset", "before the end of the block map"]),
      (0x180, 0xFFFF_FFFF, 4, .corrupt, ["block count 4294967295"]),
      (0x180, 1 << 29, 4, .corrupt, ["block map of 536870912 entries", "outside the file"]),
      (0x180, 1000, 4, .corrupt, ["data offset 0x400", "before the end of the block map"]),
      (0x180, 1, 4, .corrupt, ["exceeds its 1 blocks"]),
      (0x178, 3 << 20, 4, .corrupt, ["block size 3145728"]),
      (0x178, 1 << 30, 4, .corrupt, ["block size 1073741824"]),
      (0x17C, 1 << 30, 4, .corrupt, ["block extra"]),
      (0x170, UInt64.max, 8, .corrupt, ["disk size"]),
      (0x44, 0x0002_0000, 4, .unsupported, ["version 2.0"]),
      (0x48, 8, 4, .corrupt, ["header size 8"]),
      (0x4C, 4, 4, .unsupported, ["diff"]),
      (0x4C, 9, 4, .corrupt, ["image type 9"]),
    ]
    for (offset, value, width, kind, fragments) in cases {
      try original.write(to: URL(fileURLWithPath: image))
      try patchLE(image, at: offset, value, width: width)
      expectVDiskError(kind, [image] + fragments) { _ = try openChain(image, .init(format: VDIDriver.self)) }
    }
  }

  @Test func blockMapEntryPastEndOfFile() throws {
    let scratch = try Scratch("vdi-hostile-map")
    defer { scratch.remove() }
    let image = scratch.file("m.vdi")
    try Qemu.create(image, format: "vdi", size: "4M")
    try Qemu.io(image, format: "vdi", ["write -P 0x42 0 4M"])
    try patchLE(image, at: 0x200 + 8, 0xFFFF_FF00, width: 4)  // block 2 → slot far away
    let chain = try openChain(image)
    #expect(try chain.read(at: 0, count: 4096).allSatisfy { $0 == 0x42 })
    expectVDiskError(.corrupt, [image, "block 2", "beyond end of file"]) {
      _ = try chain.read(at: 2 << 20, count: 512)
    }
  }

  @Test func randomHeaderCorruptionNeverCrashes() throws {
    let scratch = try Scratch("vdi-hostile-fuzz")
    defer { scratch.remove() }
    let image = scratch.file("f.vdi")
    try Qemu.create(image, format: "vdi", size: "3M")
    try Qemu.io(image, format: "vdi", ["write -P 0x42 0 3M"])
    let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: image)))
    var rng = SplitMix64(seed: 5)
    for _ in 0..<200 {
      var bytes = original
      for _ in 0..<(1 + rng.next() % 3) {
        bytes[0x148 + Int(rng.next() % 0xC0)] = UInt8(truncatingIfNeeded: rng.next())
      }
      try Data(bytes).write(to: URL(fileURLWithPath: image))
      do {
        let chain = try openChain(image, .init(format: VDIDriver.self))
        _ = try chain.seekData(from: 0)
        if chain.virtualSize <= 64 << 20 { _ = try readAll(chain) }
      } catch is VDiskError {
      }
    }
  }
}
