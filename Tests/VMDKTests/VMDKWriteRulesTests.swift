import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore
import VMDK

/// The rules a vmdk writer keeps, each checked on the file itself: the CID changes once per
/// session (and a stale delta is then refused), the redundant directory and tables stay equal to
/// the primary ones, zeroed-grain entries only where the header allows them, the header's dirty
/// byte, what stays read-only, resize, and hostile images refused before a write lands.
@Suite struct VMDKWriteRulesTests {
  static func write(_ chain: LayerChain, _ byte: UInt8, at offset: UInt64, count: Int) throws {
    _ = try [UInt8](repeating: byte, count: count).withUnsafeBytes { try chain.write($0, at: offset) }
  }

  /// Grain table entry of guest byte `offset` (64 KiB grains, 512 entries per table).
  static func grainEntry(_ image: String, at offset: UInt64, redundant: Bool = false) throws -> UInt64 {
    let fields = try SparseHeaderFields(image)
    let table = try fields.directory(image, redundant: redundant)[Int(offset >> 25)]
    let slot = (offset >> 16) & 511
    return try LEBytes(bytes: readFile(image)).u32(Int(table * 512 + slot * 4))
  }

  /// The CID changes on the first write of a session (once), the parentCID of a delta does not;
  /// writing the parent afterwards changes its CID, so the delta is refused as stale, as QEMU
  /// refuses it.
  @Test func cidChangesAndAStaleDeltaIsRefused() throws {
    let scratch = try Scratch("vmdk-cid")
    defer { scratch.remove() }
    let parent = scratch.file("parent.vmdk")
    let child = scratch.file("child.vmdk")
    try Qemu.create(parent, format: "vmdk", size: "8M")
    try Qemu.io(parent, format: "vmdk", ["write -P 0x51 0 1M"])
    try Qemu.create(child, format: "vmdk", size: "8M", backing: "parent.vmdk", backingFormat: "vmdk")
    let parentCID = try #require(try descriptorValue(parent, "CID"))
    let childCID = try #require(try descriptorValue(child, "CID"))
    #expect(try descriptorValue(child, "parentCID") == parentCID)

    do {
      let chain = try openWritable(child)
      #expect(try descriptorValue(child, "CID") == childCID, "the CID changed before any write")
      try Self.write(chain, 0x52, at: 4096, count: 100)
      let first = try descriptorValue(child, "CID")
      #expect(first != childCID && first?.count == 8)
      try Self.write(chain, 0x53, at: 1 << 20, count: 100)
      try chain.flush()
      #expect(try descriptorValue(child, "CID") == first, "the CID changes once per session")
      // The embedded descriptor keeps its size and every other line.
      #expect(try descriptorValue(child, "parentCID") == parentCID)
      #expect(try descriptorValue(child, "parentFileNameHint") == "parent.vmdk")
    }
    #expect(try Qemu.check(child, format: "vmdk").isClean)
    var expected = [UInt8](repeating: 0x51, count: 1 << 20) + [UInt8](repeating: 0, count: 7 << 20)
    expected.replaceSubrange(4096..<4196, with: repeatElement(0x52, count: 100))
    expected.replaceSubrange((1 << 20)..<(1 << 20) + 100, with: repeatElement(0x53, count: 100))
    #expect(try Qemu.rawContent(of: child, scratch: scratch) == expected)
    #expect(try readAll(try openChain(child)) == expected)

    // Writing the parent makes the child stale: both vdiskfs and qemu refuse the chain.
    do {
      let chain = try openWritable(parent)
      try Self.write(chain, 0x54, at: 0, count: 10)
      try chain.flush()
    }
    #expect(try descriptorValue(parent, "CID") != parentCID)
    expectVDiskError(.corrupt, [child, "does not match CID"]) { _ = try openChain(child) }
  }

  /// New grain tables (where the directory had none) are written to both directories' places
  /// with the same content; existing tables too.
  @Test func redundantTablesStayInStep() throws {
    let scratch = try Scratch("vmdk-rgd")
    defer { scratch.remove() }
    let image = scratch.file("r.vmdk")
    try Qemu.create(image, format: "vmdk", size: "100M")
    try Qemu.io(image, format: "vmdk", ["write -P 0x61 0 1M"])
    let fields = try SparseHeaderFields(image)
    #expect(fields.redundantDirectory != 0)
    try fields.emptyDirectoryEntries(image, [1, 2])
    do {
      let chain = try openWritable(image)
      for offset: UInt64 in [100_000, 33 << 20, (66 << 20) + 12345, 90 << 20] {
        try Self.write(chain, 0x62, at: offset, count: 70_000)
      }
      try chain.flush()
    }
    #expect(try Qemu.check(image, format: "vmdk").isClean)
    let primary = try fields.directory(image)
    let redundant = try fields.directory(image, redundant: true)
    let bytes = try readFile(image)
    for index in 0..<fields.directoryEntries {
      #expect(primary[index] != 0 && redundant[index] != 0 && primary[index] != redundant[index])
      let a = Array(bytes[Int(primary[index]) * 512..<Int(primary[index]) * 512 + 2048])
      let b = Array(bytes[Int(redundant[index]) * 512..<Int(redundant[index]) * 512 + 2048])
      #expect(a == b, "grain table \(index) differs from its redundant copy")
    }
    #expect(try Self.grainEntry(image, at: 33 << 20) > 1)
  }

  /// Whole-grain discards write zeroed-grain entries (1) only when the header is version 2 with
  /// the flag (qemu-img's zeroed_grain=on); otherwise zeros are written into the grain.
  @Test(arguments: [true, false])
  func zeroedGrainEntries(flag: Bool) throws {
    let scratch = try Scratch("vmdk-zeroed")
    defer { scratch.remove() }
    let image = scratch.file("z.vmdk")
    try Qemu.create(image, format: "vmdk", size: "8M", options: flag ? ["zeroed_grain=on"] : [])
    try Qemu.io(image, format: "vmdk", ["write -P 0x71 0 256k"])
    let before = try Self.grainEntry(image, at: 65536)
    do {
      let chain = try openWritable(image)
      try chain.discard(at: 65536, length: 131_072, mode: .punchHole)
      try chain.discard(at: 4 << 20, length: 65536, mode: .zeroRange)  // unallocated: nothing to do
      try chain.discard(at: 200_000, length: 1000, mode: .zeroRange)  // partial: zeros written
      try chain.flush()
    }
    #expect(try Qemu.check(image, format: "vmdk").isClean)
    #expect(try Self.grainEntry(image, at: 65536) == (flag ? 1 : before))
    #expect(try Self.grainEntry(image, at: 131_072) == (flag ? 1 : before + 128))
    #expect(try Self.grainEntry(image, at: 4 << 20) == 0)
    var expected =
      [UInt8](repeating: 0x71, count: 256 << 10) + [UInt8](repeating: 0, count: (8 << 20) - (256 << 10))
    expected.replaceSubrange(65536..<196_608, with: repeatElement(0, count: 131_072))
    expected.replaceSubrange(200_000..<201_000, with: repeatElement(0, count: 1000))
    #expect(try Qemu.rawContent(of: image, scratch: scratch) == expected)
  }

  /// The header's dirty byte (offset 72) is set before the first write and cleared by a flush;
  /// QEMU neither writes nor checks it. One left set by a crash stays set and `info` shows it.
  @Test func dirtyByte() throws {
    let scratch = try Scratch("vmdk-dirty")
    defer { scratch.remove() }
    let image = scratch.file("d.vmdk")
    try Qemu.create(image, format: "vmdk", size: "8M")
    do {
      let chain = try openWritable(image)
      #expect(try SparseHeaderFields(image).dirtyByte == 0)
      try Self.write(chain, 0x31, at: 0, count: 4096)
      #expect(try SparseHeaderFields(image).dirtyByte == 1)
      #expect(chain.top.info.dirtyFlag == false, "info shows the state at open")
      try chain.flush()
      #expect(try SparseHeaderFields(image).dirtyByte == 0)
      try chain.discard(at: 0, length: 65536, mode: .punchHole)
      #expect(try SparseHeaderFields(image).dirtyByte == 1)
      try chain.flush()
      #expect(try SparseHeaderFields(image).dirtyByte == 0)
    }
    // As a crash leaves it: qemu does not care, vdiskfs says so and keeps it.
    try patchLE(image, at: 72, 1, width: 1)
    #expect(try Qemu.check(image, format: "vmdk").isClean)
    #expect(try openChain(image).top.info.dirtyFlag == true)
    do {
      let chain = try openWritable(image)
      try Self.write(chain, 0x32, at: 0, count: 4096)
      try chain.flush()
    }
    #expect(try SparseHeaderFields(image).dirtyByte == 1)
    #expect(try Qemu.check(image, format: "vmdk").isClean)
  }

  /// streamOptimized, COWD, seSparse, ZERO and RDONLY extents open writable only to say
  /// `.readOnly` with the reason (the mount then goes read-only); they still open read-only.
  @Test func readOnlyKinds() throws {
    let scratch = try Scratch("vmdk-ro-kinds")
    defer { scratch.remove() }
    let source = scratch.file("src.vmdk")
    try Qemu.create(source, format: "vmdk", size: "4M")
    try Qemu.io(source, format: "vmdk", ["write -P 0x41 0 1M"])
    let stream = scratch.file("stream.vmdk")
    try Qemu.img(["convert", "-O", "vmdk", "-o", "subformat=streamOptimized", source, stream])
    let streamSum = try fileChecksum(stream)
    expectVDiskError(.readOnly, [stream, "stream-optimized"]) { _ = try openWritable(stream) }
    #expect(try fileChecksum(stream) == streamSum)
    _ = try openChain(stream)

    let cowd = scratch.file("c.vmdk")
    try VMDKBuilder.cowd(cowd, capacity: 8192, grainSectors: 8, grains: [0: pattern(1, count: 4096)])
    expectVDiskError(.readOnly, [cowd, "COWD"]) { _ = try openWritable(cowd) }

    let se = scratch.file("se.vmdk")
    try VMDKBuilder.seSparse(se, capacity: 4 << 20, tables: [:], grains: [:])
    let seDescriptor = try VMDKHostileTests.descriptor(
      scratch, "RW 8192 SESPARSE \"se.vmdk\"\n", name: "sd.vmdk")
    expectVDiskError(.readOnly, ["seSparse"]) { _ = try openWritable(seDescriptor) }

    let zero = try VMDKHostileTests.descriptor(scratch, "RW 8192 ZERO\n", name: "zd.vmdk")
    expectVDiskError(.readOnly, ["ZERO"]) { _ = try openWritable(zero) }
    try Data([UInt8](repeating: 0, count: 4 << 20)).write(to: URL(fileURLWithPath: scratch.file("f.bin")))
    let rdonly = try VMDKHostileTests.descriptor(scratch, "RDONLY 8192 FLAT \"f.bin\" 0\n", name: "rd.vmdk")
    expectVDiskError(.readOnly, ["RDONLY"]) { _ = try openWritable(rdonly) }
  }

  /// QEMU 7.2's vmdk driver cannot resize; neither does vdiskfs, with a clear error.
  @Test func resizeIsRefused() throws {
    let scratch = try Scratch("vmdk-resize")
    defer { scratch.remove() }
    let image = scratch.file("s.vmdk")
    try Qemu.create(image, format: "vmdk", size: "8M")
    let qemu = try run("qemu-img", ["resize", "-f", "vmdk", image, "16M"], check: false)
    #expect(qemu.status != 0, "qemu-img resize of a vmdk: \(qemu.stdout)")
    let chain = try openWritable(image)
    expectVDiskError(.unsupported, [image, "cannot be resized"]) {
      try chain.resize(to: 16 << 20, allowShrink: false)
    }
    #expect(chain.virtualSize == 8 << 20)
  }

  /// Images a writer must not trust: writable opens refuse them (`.readOnly`, the mount goes
  /// read-only), or the write through a bad table fails (`.corrupt`), and the file is unchanged.
  @Test func hostileImagesAreNotWritten() throws {
    let scratch = try Scratch("vmdk-hostile-write")
    defer { scratch.remove() }
    func fresh() throws -> (String, SparseHeaderFields) {
      let image = scratch.file("h.vmdk")
      try? FileManager.default.removeItem(atPath: image)
      try Qemu.create(image, format: "vmdk", size: "8M")
      try Qemu.io(image, format: "vmdk", ["write -P 0x61 0 64k"])
      return (image, try SparseHeaderFields(image))
    }
    // A grain table on top of the grain directory.
    var (image, fields) = try fresh()
    try patchLE(image, at: fields.grainDirectory, fields.grainDirectory / 512, width: 4)
    try patchLE(image, at: fields.redundantDirectory, fields.grainDirectory / 512, width: 4)
    let sum = try fileChecksum(image)
    expectVDiskError(.readOnly, [image, "overlaps"]) { _ = try openWritable(image) }
    #expect(try fileChecksum(image) == sum)
    // The two directories disagree on which tables exist.
    (image, fields) = try fresh()
    try patchLE(image, at: fields.redundantDirectory, 0, width: 4)
    expectVDiskError(.readOnly, [image, "disagree"]) { _ = try openWritable(image) }
    // The redundant directory flag without a redundant directory.
    (image, fields) = try fresh()
    try patchLE(image, at: 48, 0, width: 8)
    expectVDiskError(.readOnly, [image, "redundant grain directory"]) { _ = try openWritable(image) }
    // A grain table entry naming the header: the write through that table fails, nothing lands.
    (image, fields) = try fresh()
    let table = try fields.directory(image)[0] * 512
    try patchLE(image, at: table + 4, 1, width: 4)
    do {
      let chain = try openWritable(image)
      expectVDiskError(.corrupt, [image, "refusing to write"]) {
        try Self.write(chain, 1, at: 65536, count: 512)
      }
      expectVDiskError(.corrupt, [image, "refusing to write"]) {
        try Self.write(chain, 1, at: 1 << 20, count: 512)
      }
      try chain.flush()
    }
    // The dirty byte is clear again; the grains are as they were.
    #expect(try SparseHeaderFields(image).dirtyByte == 0)
    #expect(try LEBytes(bytes: readFile(image)).u32(Int(table) + 4) == 1)
    // A descriptor whose flat extent is the descriptor file itself.
    let selfish = try VMDKHostileTests.descriptor(scratch, "RW 8 FLAT \"self.vmdk\" 0\n", name: "self.vmdk")
    let selfSum = try fileChecksum(selfish)
    expectVDiskError(.readOnly, [selfish, "descriptor"]) { _ = try openWritable(selfish) }
    #expect(try fileChecksum(selfish) == selfSum)
  }

  /// A write to a delta whose flat extent is its parent's flat file is refused: parents are
  /// never written.
  @Test func deltaSharingItsParentsFileIsRefused() throws {
    let scratch = try Scratch("vmdk-shared-extent")
    defer { scratch.remove() }
    let parent = scratch.file("p.vmdk")
    try Qemu.create(parent, format: "vmdk", size: "4M", options: ["subformat=monolithicFlat"])
    let parentCID = try #require(try descriptorValue(parent, "CID"))
    let child = try VMDKHostileTests.descriptor(
      scratch,
      "parentFileNameHint=\"p.vmdk\"\nRW 8192 FLAT \"p-flat.vmdk\" 0\n", name: "c.vmdk")
    // qemu writes the CID without leading zeros; the replacement keeps the descriptor's length.
    let paddedCID = String(repeating: "0", count: max(0, 8 - parentCID.count)) + parentCID
    try replaceText(child, "parentCID=ffffffff", "parentCID=\(paddedCID)")
    let sum = try fileChecksum(scratch.file("p-flat.vmdk"))
    expectVDiskError(.readOnly, ["backing chain"]) { _ = try openWritable(child) }
    #expect(try fileChecksum(scratch.file("p-flat.vmdk")) == sum)
  }
}
