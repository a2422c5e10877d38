import Foundation
import TestSupport
import Testing
import VDiskCore
import VMDK

/// seSparse extents as ESXi writes them: the header declares the grain pool at its full size
/// while the file holds only the grains allocated so far (QEMU reads these). Each grain a table
/// references is checked against the file when it is decoded, not the declared pool.
@Suite struct SESparseGrainPoolTests {
  /// An extent of 64 MiB whose declared grain pool covers the whole capacity (16384 grains) while
  /// the file ends inside grain 2, the last, whose tail is missing.
  static func build(_ scratch: Scratch, entries: [Int: UInt64]) throws -> String {
    let extent = scratch.file("big-sesparse.vmdk")
    try VMDKBuilder.seSparse(
      extent, capacity: 64 << 20, tables: [0: (slot: 0, entries: entries), 3: (slot: 1, entries: entries)],
      grains: [0: pattern(30, count: 4096), 1: pattern(31, count: 4096), 2: pattern(32, count: 4096)])
    // Declare the pool at full capacity (field grains_size, in sectors).
    try patchLE(extent, at: 200, (64 << 20) / 512, width: 8)
    // Cut the last grain short: its missing tail reads as zeros.
    let bytes = try readFile(extent)
    try Data(bytes.dropLast(1000)).write(to: URL(fileURLWithPath: extent))
    return try VMDKHostileTests.descriptor(
      scratch, "RW \((64 << 20) / 512) SESPARSE \"big-sesparse.vmdk\"\n", name: "big.vmdk")
  }

  @Test func declaredPoolLargerThanTheFileReads() throws {
    let scratch = try Scratch("vmdk-sesparse-pool")
    defer { scratch.remove() }
    let descriptor = try Self.build(
      scratch,
      entries: [
        0: VMDKBuilder.seEntry(type: 3, grain: 0), 7: VMDKBuilder.seEntry(type: 3, grain: 2),
        9: VMDKBuilder.seEntry(type: 3, grain: 1), 10: VMDKBuilder.seEntry(type: 2),
      ])
    var expected = [UInt8](repeating: 0, count: 64 << 20)
    for table in [0, 3] {
      let base = table * (16 << 20)
      expected.replaceSubrange(base..<base + 4096, with: pattern(30, count: 4096))
      expected.replaceSubrange(base + 7 * 4096..<base + 8 * 4096, with: pattern(32, count: 4096))
      expected.replaceSubrange(base + 9 * 4096..<base + 10 * 4096, with: pattern(31, count: 4096))
    }
    // Grain 2 is the last in the file: its last 1000 bytes are past the end and read as zeros.
    for table in [0, 3] {
      let end = table * (16 << 20) + 8 * 4096
      expected.replaceSubrange(end - 1000..<end, with: repeatElement(0, count: 1000))
    }
    let chain = try openChain(descriptor)
    #expect(firstDifference(try readAll(chain), expected) == nil)
    #expect(try Qemu.rawContent(of: descriptor, scratch: scratch) == expected)
  }

  /// A referenced grain inside the declared pool but past the end of the file: a clear error
  /// naming the extent, for that read only.
  @Test func referencedGrainPastTheEndOfTheFile() throws {
    let scratch = try Scratch("vmdk-sesparse-pool")
    defer { scratch.remove() }
    let descriptor = try Self.build(
      scratch,
      entries: [
        0: VMDKBuilder.seEntry(type: 3, grain: 0), 5: VMDKBuilder.seEntry(type: 3, grain: 500),
        7: VMDKBuilder.seEntry(type: 3, grain: 2),
      ])
    let extent = scratch.file("big-sesparse.vmdk")
    let chain = try openChain(descriptor)
    #expect(try chain.read(at: 0, count: 4096) == pattern(30, count: 4096))
    expectVDiskError(.corrupt, [extent, "entry 5", "grain 500", "past the end of the file"]) {
      _ = try chain.read(at: 5 * 4096, count: 4096)
    }
    // A grain in the file but outside the declared pool (now 2 grains).
    try patchLE(extent, at: 200, 16, width: 8)
    let small = try openChain(descriptor)
    expectVDiskError(.corrupt, [extent, "outside the grain pool"]) {
      _ = try small.read(at: 7 * 4096, count: 1)
    }
  }
}
