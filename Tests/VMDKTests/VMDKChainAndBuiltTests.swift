import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore
import VMDK

/// Delta chains, mixed chains, and extents built in test code (COWD, seSparse, GD_AT_END
/// streams, descriptors mixing extent kinds), cross-checked with qemu where it reads them.
@Suite struct VMDKChainAndBuiltTests {
  /// A base with a pattern everywhere, for deltas to be told apart from it.
  static func patternedBase(_ scratch: Scratch, size: String = "8M") throws -> String {
    let base = scratch.file("base.vmdk")
    try Qemu.create(base, format: "vmdk", size: size)
    try Qemu.io(base, format: "vmdk", ["write -P 0x5a 0 \(size)", "write -P 0x5b 1M 64k"])
    return base
  }

  @Test(arguments: ["monolithicSparse", "twoGbMaxExtentSparse"])
  func qemuMadeDeltaChain(subformat: String) throws {
    let scratch = try Scratch("vmdk-delta")
    defer { scratch.remove() }
    _ = try Self.patternedBase(scratch)
    let middle = scratch.file("middle.vmdk")
    let top = scratch.file("top.vmdk")
    try Qemu.create(
      middle, format: "vmdk", size: "8M", options: ["subformat=\(subformat)"], backing: "base.vmdk",
      backingFormat: "vmdk")
    try Qemu.io(middle, format: "vmdk", ["write -P 0x21 0 64k", "write -P 0x22 3M 100k"])
    try Qemu.create(top, format: "vmdk", size: "8M", backing: "middle.vmdk", backingFormat: "vmdk")
    try Qemu.io(top, format: "vmdk", ["write -P 0x31 32k 64k", "write -P 0x32 7M 4k"])
    try expectMatchesQemu(top, scratch: scratch)
    let chain = try openChain(top)
    #expect(chain.layers.count == 3)
    #expect(chain.top.info.backingFilename == "middle.vmdk")
    #expect(chain.top.info.backingFormat == "vmdk")
    let status = try chain.status(at: 3 << 20, maxLength: 4096)
    #expect(status.depth == 1 && status.isData)
  }

  @Test func qcow2OverVMDK() throws {
    let scratch = try Scratch("vmdk-mixed")
    defer { scratch.remove() }
    _ = try Self.patternedBase(scratch)
    let top = scratch.file("top.qcow2")
    try Qemu.create(top, size: "8M", backing: "base.vmdk", backingFormat: "vmdk")
    try Qemu.io(top, ["write -P 0x44 2M 1M"])
    try expectMatchesQemu(top, scratch: scratch)
    let chain = try openChain(top)
    #expect(chain.layers.map(\.formatName) == ["qcow2", "vmdk"])
  }

  /// parentCID must equal the parent's CID: a .corrupt error naming both files.
  @Test func parentCIDMismatch() throws {
    let scratch = try Scratch("vmdk-cid")
    defer { scratch.remove() }
    let base = try Self.patternedBase(scratch)
    let child = scratch.file("child.vmdk")
    try Qemu.create(child, format: "vmdk", size: "8M", backing: "base.vmdk", backingFormat: "vmdk")
    let parentCID = try #require(try descriptorValue(child, "parentCID"))
    // (QEMU writes CIDs with %x, not zero-padded: the line's length varies, so the descriptor is
    // edited as text, not patched in place.)
    let other = parentCID == "1" ? "2" : "1"
    try replaceInDescriptor(child, "parentCID=\(parentCID)\n", "parentCID=\(other)\n")
    expectVDiskError(.corrupt, ["parentCID", "child.vmdk", "base.vmdk", "does not match"]) {
      _ = try openChain(child)
    }
    // "ffffffff" means no parent: the hint is ignored.
    try replaceInDescriptor(child, "parentCID=\(other)\n", "parentCID=ffffffff\n")
    let chain = try openChain(child)
    #expect(chain.layers.count == 1)
    _ = base
  }

  @Test func parentLoopIsRefused() throws {
    let scratch = try Scratch("vmdk-loop")
    defer { scratch.remove() }
    try Qemu.create(scratch.file("x.vmdk"), format: "vmdk", size: "1M")
    for (name, parent) in [("a.vmdk", "b.vmdk"), ("b.vmdk", "a.vmdk")] {
      let text = """
        # Disk DescriptorFile
        version=1
        CID=11111111
        parentCID=11111111
        createType="monolithicSparse"
        parentFileNameHint="\(parent)"
        RW 2048 SPARSE "x.vmdk"

        """
      try Data(text.utf8).write(to: URL(fileURLWithPath: scratch.file(name)))
    }
    expectVDiskError(.corrupt, ["loops", "a.vmdk", "b.vmdk"]) { _ = try openChain(scratch.file("a.vmdk")) }
  }

  /// A VMware-style stream: GD_AT_END in the header, the real GD in the footer at EOF-1024,
  /// metadata markers; qemu reads it too.
  @Test func streamOptimizedWithFooter() throws {
    let scratch = try Scratch("vmdk-footer")
    defer { scratch.remove() }
    let source = scratch.file("src.qcow2")
    try Qemu.create(source, size: "70M")
    try Qemu.scatterPatterns(source, size: 70 << 20, count: 30, seed: 4)
    let qemuStream = scratch.file("qemu.vmdk")
    try Qemu.img(["convert", "-O", "vmdk", "-o", "subformat=streamOptimized", source, qemuStream])
    let image = scratch.file("vmware.vmdk")
    try VMDKBuilder.streamWithFooter(from: qemuStream, to: image)
    #expect(try field(image, at: 56, width: 8) == UInt64.max)
    let expected = try Qemu.rawContent(of: source, scratch: scratch)
    #expect(try Qemu.rawContent(of: image, scratch: scratch) == expected)
    let chain = try openChain(image)
    #expect(firstDifference(try readAll(chain), expected) == nil)
    try expectSameDataRanges(image, chain)
  }

  /// vmfsSparse: a COWD delta over a sparse base, through a descriptor; and the COWD file alone.
  @Test func cowdDeltaExtent() throws {
    let scratch = try Scratch("vmdk-cowd")
    defer { scratch.remove() }
    let base = try Self.patternedBase(scratch)
    let baseCID = try #require(try descriptorValue(base, "CID"))
    let grains: [Int: [UInt8]] = [
      0: pattern(1, count: 4096), 1: pattern(2, count: 4096), 2: pattern(3, count: 4096),
      300: pattern(4, count: 4096),
      2047: pattern(5, count: 4096),
    ]
    let delta = scratch.file("disk-delta.vmdk")
    let content = try VMDKBuilder.cowd(delta, capacity: 16384, grainSectors: 8, grains: grains)
    let descriptor = scratch.file("disk.vmdk")
    let text = """
      # Disk DescriptorFile
      version=1
      CID=fffffffe
      parentCID=\(baseCID)
      createType="vmfsSparse"
      parentFileNameHint="base.vmdk"

      # Extent description
      RW 16384 VMFSSPARSE "disk-delta.vmdk"

      """
    try Data(text.utf8).write(to: URL(fileURLWithPath: descriptor))
    try expectMatchesQemu(descriptor, scratch: scratch)
    let chain = try openChain(descriptor)
    let baseBytes = try Qemu.rawContent(of: base, scratch: scratch)
    let actual = try readAll(chain)
    #expect(Array(actual[0..<12288]) == Array(content[0..<12288]))
    #expect(Array(actual[12288..<16384]) == Array(baseBytes[12288..<16384]))
    // Grains 0…2 were stored one after another: one host-contiguous extent.
    #expect(try chain.top.extent(at: 0, maxLength: 1 << 20).length == 12288)
    // The COWD file on its own is a vmdk of the extent's size with no parent.
    let alone = try openChain(delta)
    #expect(alone.virtualSize == 16384 * 512)
    #expect(try alone.read(at: 300 * 4096, count: 4096) == pattern(4, count: 4096))
  }

  /// seSparse (built per vmdk-sesparse-notes.md) over a sparse base: allocated grains (including
  /// one whose grain number needs the swapped halves), unmapped and zero grains read as zeros,
  /// unallocated ones from the base; GT slots out of guest order.
  @Test func seSparseDelta() throws {
    let scratch = try Scratch("vmdk-sesparse")
    defer { scratch.remove() }
    let base = try Self.patternedBase(scratch, size: "40M")
    let baseCID = try #require(try descriptorValue(base, "CID"))
    let extent = scratch.file("disk-sesparse.vmdk")
    try VMDKBuilder.seSparse(
      extent, capacity: 40 << 20,
      tables: [
        0: (
          slot: 1,
          entries: [
            0: VMDKBuilder.seEntry(type: 3, grain: 0), 1: VMDKBuilder.seEntry(type: 3, grain: 1),
            5: VMDKBuilder.seEntry(type: 1), 6: VMDKBuilder.seEntry(type: 2),
            300: VMDKBuilder.seEntry(type: 3, grain: 4097),
          ]
        ),
        2: (slot: 0, entries: [100: VMDKBuilder.seEntry(type: 3, grain: 2)]),
      ],
      grains: [
        0: pattern(10, count: 4096), 1: pattern(11, count: 4096), 2: pattern(12, count: 4096),
        4097: pattern(13, count: 4096),
      ])
    let descriptor = scratch.file("disk.vmdk")
    let text = """
      # Disk DescriptorFile
      version=1
      CID=abcdef01
      parentCID=\(baseCID)
      createType="seSparse"
      parentFileNameHint="base.vmdk"
      RW \(40 << 11) SESPARSE "disk-sesparse.vmdk"

      """
    try Data(text.utf8).write(to: URL(fileURLWithPath: descriptor))
    var expected = try Qemu.rawContent(of: base, scratch: scratch)
    for (offset, bytes) in [
      (0, pattern(10, count: 4096)), (4096, pattern(11, count: 4096)),
      (5 * 4096, [UInt8](repeating: 0, count: 8192)),
      (300 * 4096, pattern(13, count: 4096)), ((32 << 20) + 100 * 4096, pattern(12, count: 4096)),
    ] {
      expected.replaceSubrange(offset..<offset + bytes.count, with: bytes)
    }
    #expect(try Qemu.rawContent(of: descriptor, scratch: scratch) == expected)
    let chain = try openChain(descriptor)
    #expect(firstDifference(try readAll(chain), expected) == nil)
    #expect(try chain.top.extent(at: 0, maxLength: 1 << 20).length == 8192)
    #expect(try chain.top.extent(at: 5 * 4096, maxLength: 1 << 20).mapping == .zero)
    #expect(try chain.top.extent(at: 16 << 20, maxLength: 64 << 20).mapping == .unallocated)
  }

  /// One descriptor mixing FLAT with a start offset, ZERO, SPARSE and read-only VMFS extents
  /// (qemu skips ZERO and RDONLY lines, so the expected bytes are computed here).
  @Test func mixedExtentKinds() throws {
    let scratch = try Scratch("vmdk-mixed-extents")
    defer { scratch.remove() }
    let flat = pattern(20, count: 3 << 20)
    try Data(flat).write(to: URL(fileURLWithPath: scratch.file("data.bin")))
    let vmfs = pattern(21, count: 256 << 10)
    try Data(vmfs).write(to: URL(fileURLWithPath: scratch.file("v-flat.vmdk")))
    try Qemu.create(scratch.file("s.vmdk"), format: "vmdk", size: "1M")
    try Qemu.io(scratch.file("s.vmdk"), format: "vmdk", ["write -P 0x66 64k 64k"])
    let text = """
      # Disk DescriptorFile
      version=1
      CID=12345678
      parentCID=ffffffff
      createType="custom"

      RW 2048 FLAT "data.bin" 4096
      RW 1024 ZERO
      RW 2048 SPARSE "s.vmdk"
      RDONLY 512 VMFS "v-flat.vmdk"
      """
    let descriptor = scratch.file("mixed.vmdk")
    try Data(text.utf8).write(to: URL(fileURLWithPath: descriptor))
    var expected = Array(flat[(2 << 20)..<(3 << 20)])
    expected += [UInt8](repeating: 0, count: 512 << 10)
    expected += try Qemu.rawContent(of: scratch.file("s.vmdk"), scratch: scratch)
    expected += vmfs
    let chain = try openChain(descriptor)
    #expect(chain.virtualSize == UInt64(expected.count))
    #expect(firstDifference(try readAll(chain), expected) == nil)
    #expect(try chain.top.extent(at: 1 << 20, maxLength: 1 << 30).mapping == .zero)
    let e = try chain.top.extent(at: 4096, maxLength: 1 << 30)
    #expect(e.mapping == .data(hostOffset: (2 << 20) + 4096))
    #expect(e.length == (1 << 20) - 4096)
    #expect(e.file.path.hasSuffix("/data.bin"))
  }
}
