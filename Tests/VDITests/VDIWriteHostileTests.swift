import Foundation
import TestSupport
import Testing
import VDI
import VDiskCore

/// A writable open re-checks what the writer relies on and refuses (`.readOnly`, so a mount falls
/// back to read-only) instead of writing into a damaged image; the file is never changed.
@Suite struct VDIWriteHostileTests {
  static let mib: UInt64 = 1 << 20
  static let mapOffset: UInt64 = 0x200

  /// A dynamic 4 MiB vdi with blocks 0 and 2 allocated (slots 0 and 1).
  static func image(_ scratch: Scratch) throws -> String {
    let image = scratch.file("h.vdi")
    try Qemu.create(image, format: "vdi", size: "4M")
    try Qemu.io(image, format: "vdi", ["write -P 0x42 0 4k", "write -P 0x43 2M 4k"])
    return image
  }

  @Test func damagedMapsAreRefusedForWriting() throws {
    let scratch = try Scratch("vdi-write-hostile")
    defer { scratch.remove() }
    let image = try Self.image(scratch)
    let original = try Data(contentsOf: URL(fileURLWithPath: image))
    let cases: [(offset: UInt64, value: UInt64, fragments: [String])] = [
      // Block 1 names slot 5: past cBlocksAllocated.
      (Self.mapOffset + 4, 5, ["block 1 names slot 5", "counts only 2"]),
      // Block 2 shares slot 0 with block 0.
      (Self.mapOffset + 8, 0, ["block 2 names slot 0", "an earlier block uses too"]),
      // The count says 3, the map has 2.
      (0x184, 3, ["has 2 allocated blocks but the header counts 3"]),
      // The count says 1: block 2's slot 1 is past it.
      (0x184, 1, ["block 2 names slot 1", "counts only 1"]),
      // More allocated than there are blocks.
      (0x184, 9, ["counts 9 allocated blocks", "only 4"]),
    ]
    for c in cases {
      try original.write(to: URL(fileURLWithPath: image))
      try patchLE(image, at: c.offset, c.value, width: 4)
      let before = try Data(contentsOf: URL(fileURLWithPath: image))
      expectVDiskError(.readOnly, [image, "refusing to write"] + c.fragments) {
        _ = try openWritable(image, format: VDIDriver.self)
      }
      #expect(try Data(contentsOf: URL(fileURLWithPath: image)) == before)
      // Still readable where the map is sound.
      #expect(try openChain(image).read(at: 0, count: 4096).allSatisfy { $0 == 0x42 })
    }
    // qemu agrees each of these is damaged (the test images are the ones it would flag).
    try original.write(to: URL(fileURLWithPath: image))
    try patchLE(image, at: Self.mapOffset + 8, 0, width: 4)
    #expect(!(try Qemu.check(image, format: "vdi").isClean))
  }

  @Test func slotPastEndOfFileIsRefusedForWriting() throws {
    let scratch = try Scratch("vdi-write-truncated")
    defer { scratch.remove() }
    let image = try Self.image(scratch)
    // Cut the file in the middle of slot 1 (block 2); data starts at 0x400.
    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: image))
    try handle.truncate(atOffset: 0x400 + Self.mib + 4096)
    try handle.close()
    let before = try Data(contentsOf: URL(fileURLWithPath: image))
    expectVDiskError(.readOnly, [image, "block 2 (slot 1) lies beyond end of file", "refusing to write"]) {
      _ = try openWritable(image, format: VDIDriver.self)
    }
    #expect(try Data(contentsOf: URL(fileURLWithPath: image)) == before)
  }

  @Test func legacyImagesAreReadOnly() throws {
    let scratch = try Scratch("vdi-write-v0")
    defer { scratch.remove() }
    let image = scratch.file("v0.vdi")
    let builder = VDIBuilder(
      version1: false, diskSize: 2 << 20, map: [0, 0xFFFF_FFFF],
      slots: [[UInt8](repeating: 7, count: 1 << 20)])
    try builder.write(to: image)
    expectVDiskError(.readOnly, [image, "legacy VDI 0.0"]) {
      _ = try openWritable(image, format: VDIDriver.self)
    }
    #expect(try openChain(image).read(at: 0, count: 4) == [7, 7, 7, 7])
  }

  /// Hand-made images vdiskfs can write though qemu cannot open them (64 KiB blocks, a block
  /// prefix, slots out of order): what is written reads back, and the prefixes are untouched.
  @Test func blockExtraAndSmallBlocks() throws {
    let scratch = try Scratch("vdi-write-hand")
    defer { scratch.remove() }
    let block = 64 << 10
    var slots: [[UInt8]] = []
    for i in 0..<3 { slots.append((0..<block).map { UInt8(truncatingIfNeeded: $0 * 7 + i * 50 + 1) }) }
    let builder = VDIBuilder(
      diskSize: UInt64(5 * block - 300), blockSize: UInt32(block), blockExtra: 512,
      map: [2, 0xFFFF_FFFF, 0, 0xFFFF_FFFE, 1], slots: slots)
    let image = scratch.file("hand.vdi")
    try builder.write(to: image)
    let dataOffset = UInt64(512 + 512)
    let slotSize = UInt64(block + 512)

    let disk = MirroredDisk(chain: try openWritable(image, format: VDIDriver.self), mirror: builder.content)
    try disk.write(at: UInt64(block) - 100, count: 300)  // block 0 in place, block 1 new (slot 3)
    try disk.write(at: UInt64(3 * block) + 5, count: 10)  // block 3 (zero-marked) new (slot 4)
    try disk.write(at: UInt64(4 * block) + 1000, count: block - 2000)  // block 4, last, in place
    try disk.discard(at: UInt64(2 * block), count: block, mode: .punchHole)
    try disk.chain.flush()
    #expect(try disk.verifyAll() == nil)
    #expect(try u32LE(image, at: 0x184) == 5)
    #expect(try u32LE(image, at: 0x200 + 4) == 3)
    #expect(try u32LE(image, at: 0x200 + 12) == 4)
    let reopened = try openChain(image)
    #expect(try readAll(reopened) == disk.mirror)
    // The prefixes of the old slots are as the builder wrote them.
    let file = try Data(contentsOf: URL(fileURLWithPath: image))
    for slot in 0..<3 {
      let start = Int(dataOffset + UInt64(slot) * slotSize)
      #expect(file[start..<start + 512].allSatisfy { $0 == 0xEE }, "slot \(slot)")
    }
    // The image as left is one vdiskfs would write again (slots 0..<5, each once).
    _ = try openWritable(image, format: VDIDriver.self)
  }
}
