import Foundation
import TestSupport
import Testing
import VDI
import VDiskCore

/// Where the VDI writer puts things and when: slots, the map, cBlocksAllocated, the file's size,
/// the order of its I/O, failed writes, and what it refuses.
@Suite struct VDIWriteStructureTests {
  static let mib: UInt64 = 1 << 20
  /// qemu's layout for an 8 MiB vdi: map at 0x200, data at 0x400.
  static let mapOffset: UInt64 = 0x200
  static let dataOffset: UInt64 = 0x400

  /// A new block goes to slot cBlocksAllocated, past the end of the file as a hole; the map entry
  /// and the count reach the file only at the flush, in one write after a sync.
  @Test func allocationGoesToTheNextSlotAndMetadataWaitsForTheFlush() throws {
    let scratch = try Scratch("vdi-structure")
    defer { scratch.remove() }
    let image = scratch.file("d.vdi")
    try Qemu.create(image, format: "vdi", size: "8M")
    try Qemu.io(image, format: "vdi", ["write -P 0x11 3M 4k"])  // block 3 → slot 0
    #expect(try fileSize(image) == Self.dataOffset + Self.mib)

    let disk = try FaultyChain(image, format: VDIDriver.self)
    let bytes = pattern(5000, serial: 9)
    _ = try bytes.withUnsafeBytes { try disk.chain.write($0, at: 6 * Self.mib + 4096) }
    // Block 6 → slot 1: only the data is written, then the file is extended over the rest of the
    // slot (the engine writes no zero fill past the end of the file).
    let stages = disk.source.stages
    #expect(stages.map(\.kind) == [.gatheringWrite, .extend], "\(stages)")
    #expect(stages.first?.offset == Self.dataOffset + Self.mib + 4096)
    #expect(stages.first?.length == 5000)
    #expect(stages.last.map { $0.offset + $0.length } == Self.dataOffset + 2 * Self.mib)
    #expect(try fileSize(image) == Self.dataOffset + 2 * Self.mib)
    #expect(try u32LE(image, at: Self.mapOffset + 6 * 4) == 0xFFFF_FFFF)
    #expect(try u32LE(image, at: 0x184) == 1)
    // Readers see it at once.
    #expect(try disk.chain.read(at: 6 * Self.mib + 4096, count: 5000) == bytes)
    #expect(try disk.chain.read(at: 6 * Self.mib, count: 4096).allSatisfy { $0 == 0 })

    try disk.chain.flush()
    let flush = Array(disk.source.stages.dropFirst(2))
    #expect(flush.map(\.kind) == [.sync, .write, .sync], "\(flush)")
    #expect(flush[1].offset == 0x184)
    #expect(flush[1].length == Self.mapOffset + 8 * 4 - 0x184)
    #expect(try u32LE(image, at: Self.mapOffset + 6 * 4) == 1)
    #expect(try u32LE(image, at: 0x184) == 2)

    // Nothing dirty: one sync.
    try disk.chain.flush()
    #expect(disk.source.stages.dropFirst(5).map(\.kind) == [.sync])
    #expect(try Qemu.check(image, format: "vdi").isClean)
  }

  /// A static image is written in place: no allocation, no metadata, the file's size unchanged.
  @Test func staticImagesAreWrittenInPlace() throws {
    let scratch = try Scratch("vdi-static")
    defer { scratch.remove() }
    let image = scratch.file("s.vdi")
    try Qemu.create(image, format: "vdi", size: "4M", options: ["static=on"])
    let size = try fileSize(image)
    let disk = try FaultyChain(image, format: VDIDriver.self)
    let bytes = pattern(3 * Int(Self.mib), serial: 3)
    _ = try bytes.withUnsafeBytes { try disk.chain.write($0, at: Self.mib / 2) }
    try disk.chain.discard(at: Self.mib, length: Self.mib, mode: .punchHole)
    try disk.chain.flush()
    // One gathered write for the three blocks (their slots follow each other), the discard's
    // zeros, and a sync with nothing dirty.
    #expect(
      disk.source.stages.map(\.kind) == [.gatheringWrite, .gatheringWrite, .sync], "\(disk.source.stages)")
    #expect(try fileSize(image) == size)
    var expected = [UInt8](repeating: 0, count: Int(4 * Self.mib))
    expected.replaceSubrange(Int(Self.mib / 2)..<Int(Self.mib / 2) + bytes.count, with: bytes)
    expected.replaceSubrange(Int(Self.mib)..<Int(2 * Self.mib), with: repeatElement(0, count: Int(Self.mib)))
    #expect(try Qemu.rawContent(of: image, scratch: scratch) == expected)
    #expect(try Qemu.check(image, format: "vdi").isClean)
  }

  /// A slot that already holds bytes (left by a crashed allocation) is written whole: the rest of
  /// the new block reads as zeros, not as the old bytes.
  @Test func aReusedSlotIsWrittenWhole() throws {
    let scratch = try Scratch("vdi-reuse")
    defer { scratch.remove() }
    let image = scratch.file("d.vdi")
    try Qemu.create(image, format: "vdi", size: "4M")
    // Two slots' worth of leftovers past the end of the data area.
    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: image))
    try handle.seekToEnd()
    try handle.write(contentsOf: Data(repeating: 0xAA, count: Int(2 * Self.mib)))
    try handle.close()

    let chain = try openWritable(image, format: VDIDriver.self)
    let bytes = pattern(4096, serial: 5)
    _ = try bytes.withUnsafeBytes { try chain.write($0, at: 2 * Self.mib + 8192) }
    try chain.flush()
    var expected = [UInt8](repeating: 0, count: Int(4 * Self.mib))
    expected.replaceSubrange(Int(2 * Self.mib + 8192)..<Int(2 * Self.mib + 8192 + 4096), with: bytes)
    #expect(try chain.read(at: 0, count: Int(4 * Self.mib)) == expected)
    #expect(try Qemu.rawContent(of: image, scratch: scratch) == expected)
    #expect(try Qemu.check(image, format: "vdi").isClean)
  }

  /// Discards leave free blocks alone, zero allocated ones in place, and never change the count
  /// or a map entry; the disk reads zeros there afterwards.
  @Test func discardZeroesAllocatedBlocksInPlace() throws {
    let scratch = try Scratch("vdi-discard")
    defer { scratch.remove() }
    let image = scratch.file("d.vdi")
    try Qemu.create(image, format: "vdi", size: "4M")
    try Qemu.io(image, format: "vdi", ["write -P 0x22 1M 1M"])
    let chain = try openWritable(image, format: VDIDriver.self)
    try chain.discard(at: 0, length: 4 * Self.mib, mode: .punchHole)
    try chain.flush()
    #expect(try u32LE(image, at: 0x184) == 1)
    #expect(try u32LE(image, at: Self.mapOffset + 4) == 0)
    #expect(try u32LE(image, at: Self.mapOffset) == 0xFFFF_FFFF)
    #expect(try Qemu.rawContent(of: image, scratch: scratch).allSatisfy { $0 == 0 })
    #expect(try Qemu.check(image, format: "vdi").isClean)
  }

  /// qemu cannot resize a vdi; neither can vdiskfs, with a clear error. The same size is fine.
  @Test func resizeIsRefused() throws {
    let scratch = try Scratch("vdi-resize")
    defer { scratch.remove() }
    let image = scratch.file("d.vdi")
    try Qemu.create(image, format: "vdi", size: "4M")
    let qemu = try run("qemu-img", ["resize", "-f", "vdi", image, "8M"], check: false)
    #expect(qemu.status != 0)
    let chain = try openWritable(image, format: VDIDriver.self)
    try chain.resize(to: 4 * Self.mib, allowShrink: false)
    expectVDiskError(.unsupported, [image, "resizing VDI images is not supported"]) {
      try chain.resize(to: 8 * Self.mib, allowShrink: false)
    }
    expectVDiskError(.unsupported, [image, "resizing VDI images is not supported"]) {
      try chain.resize(to: 2 * Self.mib, allowShrink: true)
    }
    #expect(chain.virtualSize == 4 * Self.mib)
  }

  /// EIO on the data write of an allocating write: the writer gets the error, nothing a flush
  /// acknowledged is lost, the block stays free, and a later write to it allocates it cleanly.
  @Test func failedDataWriteLosesNothingAcknowledged() throws {
    let scratch = try Scratch("vdi-eio")
    defer { scratch.remove() }
    let image = scratch.file("d.vdi")
    try Qemu.create(image, format: "vdi", size: "4M")
    let disk = try FaultyChain(image, format: VDIDriver.self)
    let first = pattern(10_000, serial: 1)
    _ = try first.withUnsafeBytes { try disk.chain.write($0, at: 1000) }
    try disk.chain.flush()

    let second = pattern(4096, serial: 2)
    disk.source.failWrites(count: 1, with: .ioError)
    expectVDiskError(.io, [image]) {
      _ = try second.withUnsafeBytes { try disk.chain.write($0, at: 2 * Self.mib + 512) }
    }
    disk.source.failWrites(count: 1, with: .noSpace)
    expectVDiskError(.noSpace, [image]) {
      _ = try second.withUnsafeBytes { try disk.chain.write($0, at: 1000) }
    }
    #expect(try disk.chain.read(at: 1000, count: first.count) == first)
    #expect(try disk.chain.read(at: 2 * Self.mib, count: 8192).allSatisfy { $0 == 0 })
    try disk.chain.flush()
    #expect(try u32LE(image, at: 0x184) == 1)
    #expect(try Qemu.check(image, format: "vdi").isClean)

    // The failed allocation's slot is taken again, written whole this time.
    let third = pattern(4096, serial: 3)
    _ = try third.withUnsafeBytes { try disk.chain.write($0, at: 2 * Self.mib + 512) }
    try disk.chain.flush()
    var expected = [UInt8](repeating: 0, count: Int(4 * Self.mib))
    expected.replaceSubrange(1000..<1000 + first.count, with: first)
    expected.replaceSubrange(Int(2 * Self.mib + 512)..<Int(2 * Self.mib + 512) + 4096, with: third)
    #expect(try Qemu.rawContent(of: image, scratch: scratch) == expected)
    #expect(try u32LE(image, at: 0x184) == 2)
    #expect(try Qemu.check(image, format: "vdi").isClean)
  }

  /// A failed write-back keeps the pages dirty; the next flush writes them.
  @Test func failedFlushIsRetried() throws {
    let scratch = try Scratch("vdi-flush-eio")
    defer { scratch.remove() }
    let image = scratch.file("d.vdi")
    try Qemu.create(image, format: "vdi", size: "4M")
    let disk = try FaultyChain(image, format: VDIDriver.self)
    let bytes = pattern(4096, serial: 4)
    _ = try bytes.withUnsafeBytes { try disk.chain.write($0, at: 3 * Self.mib) }
    disk.source.failWrites(overlapping: 0..<512, count: 1, with: .ioError)
    expectVDiskError(.io, [image]) { try disk.chain.flush() }
    #expect(try u32LE(image, at: 0x184) == 0)
    #expect(try Qemu.check(image, format: "vdi").isClean)
    try disk.chain.flush()
    #expect(try u32LE(image, at: 0x184) == 1)
    #expect(try u32LE(image, at: Self.mapOffset + 3 * 4) == 0)
    #expect(try Qemu.check(image, format: "vdi").isClean)
  }
}
