import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore
import VMDK

/// Damaged and malicious images: each a clear `VDiskError` (kind, file, fault) when opened or
/// read, never a crash, a hang or a huge allocation.
@Suite struct VMDKHostileTests {
  /// A 4 MiB monolithicSparse image with data in its first grain; header fields at fixed offsets.
  static func sparse(_ scratch: Scratch, _ name: String = "h.vmdk") throws -> String {
    let image = scratch.file(name)
    try Qemu.create(image, format: "vmdk", size: "4M")
    try Qemu.io(image, format: "vmdk", ["write -P 0x61 0 64k"])
    return image
  }

  static func descriptor(_ scratch: Scratch, _ body: String, name: String = "d.vmdk") throws -> String {
    let path = scratch.file(name)
    let text =
      "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"
      + body
    try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    return path
  }

  @Test func headerFields() throws {
    let scratch = try Scratch("vmdk-hostile")
    defer { scratch.remove() }
    let cases: [(offset: UInt64, value: UInt64, width: Int, kind: VDiskError.Kind, fragment: String)] = [
      (4, 4, 4, .unsupported, "version 4"),
      (12, 1 << 60, 8, .corrupt, "capacity"),
      (20, 3, 8, .corrupt, "grain size"),
      (20, 1 << 40, 8, .corrupt, "grain size"),
      (44, 0, 4, .corrupt, "grain table entries"),
      (44, 100_000, 4, .corrupt, "grain table entries"),
      (56, 1 << 40, 8, .corrupt, "grain directory"),
      (56, 0, 8, .corrupt, "grain directory"),
      (36, 1 << 30, 8, .corrupt, "embedded descriptor"),
      (28, 1 << 40, 8, .corrupt, "embedded descriptor"),
      (73, 0x0d0a, 2, .corrupt, "newline"),
      (77, 7, 2, .unsupported, "compression method 7"),
    ]
    for c in cases {
      let image = try Self.sparse(scratch)
      try patchLE(image, at: c.offset, c.value, width: c.width)
      expectVDiskError(c.kind, [image, c.fragment]) { _ = try openChain(image) }
    }
  }

  @Test func grainTablesAndGrainsPastTheEnd() throws {
    let scratch = try Scratch("vmdk-hostile")
    defer { scratch.remove() }
    // GD entry 0 → a grain table far past the end: the read fails with EIO-kind .corrupt.
    var image = try Self.sparse(scratch)
    let gd = try LEBytes(bytes: readFile(image)).u64(56) * 512
    try patchLE(image, at: gd, 0x7fff_0000, width: 4)
    var chain = try openChain(image)
    expectVDiskError(.corrupt, [image, "grain table", "beyond end of file"]) {
      _ = try chain.read(at: 0, count: 512)
    }
    // GT entry 0 → a grain past the end.
    image = try Self.sparse(scratch, "g.vmdk")
    let bytes = LEBytes(bytes: try readFile(image))
    let gt = bytes.u32(Int(bytes.u64(56)) * 512) * 512
    try patchLE(image, at: gt, 0x7fff_0000, width: 4)
    chain = try openChain(image)
    expectVDiskError(.corrupt, [image, "grain table entry 0", "past the end"]) {
      _ = try chain.read(at: 0, count: 512)
    }
  }

  @Test func garbageCompressedGrain() throws {
    let scratch = try Scratch("vmdk-hostile")
    defer { scratch.remove() }
    let source = scratch.file("s.qcow2")
    try Qemu.create(source, size: "1M")
    try Qemu.io(source, ["write -P 0x12 0 1M"])
    let image = scratch.file("stream.vmdk")
    try Qemu.img(["convert", "-O", "vmdk", "-o", "subformat=streamOptimized", source, image])
    let bytes = LEBytes(bytes: try readFile(image))
    let gt = bytes.u32(Int(bytes.u64(56)) * 512) * 512
    let grain = bytes.u32(Int(gt)) * 512
    // Garbage deflate data.
    try patch(image, at: grain + 12, bytes: [UInt8](repeating: 0xa5, count: 64))
    var chain = try openChain(image)
    expectVDiskError(.corrupt, [image, "compressed grain", "does not inflate"]) {
      _ = try chain.read(at: 0, count: 4096)
    }
    // A marker claiming a compressed size larger than a grain can take.
    try patchLE(image, at: grain + 8, 0x7fff_ffff, width: 4)
    chain = try openChain(image)
    expectVDiskError(.corrupt, [image, "invalid compressed size"]) { _ = try chain.read(at: 0, count: 4096) }
    // GD_AT_END with no footer at the end of the file.
    try patchLE(image, at: 56, UInt64.max, width: 8)
    expectVDiskError(.corrupt, [image, "footer"]) { _ = try openChain(image) }
  }

  @Test func descriptorFaults() throws {
    let scratch = try Scratch("vmdk-hostile")
    defer { scratch.remove() }
    _ = try Self.sparse(scratch, "x.vmdk")
    let cases: [(body: String, kind: VDiskError.Kind, fragments: [String])] = [
      ("RW 2048 SPARSE \"../x.vmdk\"\n", .unsupported, ["../x.vmdk", "outside"]),
      ("RW 2048 FLAT \"/etc/passwd\" 0\n", .unsupported, ["/etc/passwd", "absolute"]),
      ("RW 2048 FLAT \"sub/../../x\" 0\n", .unsupported, ["outside"]),
      ("RW 2048 SPARSE \"missing.vmdk\"\n", .notFound, ["missing.vmdk", "does not exist"]),
      ("RW 2048 VMFSRDM \"x.vmdk\"\n", .unsupported, ["VMFSRDM", "physical device"]),
      ("RW 2048 BOGUS \"x.vmdk\"\n", .corrupt, ["unknown extent type", "line 6"]),
      ("RW lots SPARSE \"x.vmdk\"\n", .corrupt, ["sector count"]),
      ("RW 2048 SPARSE x.vmdk\n", .corrupt, ["not quoted"]),
      ("RW 99999999999999999 FLAT \"x.vmdk\" 0\n", .corrupt, ["out of range"]),
      ("RW 16384 SPARSE \"x.vmdk\"\n", .corrupt, ["covers 8192 sectors", "16384"]),
      ("NOACCESS 2048 FLAT \"x.vmdk\" 0\n", .unsupported, ["NOACCESS"]),
      ("this is not a descriptor\n", .corrupt, ["neither a setting nor an extent"]),
      ("# only comments\n", .corrupt, ["no extents"]),
      ("version=9\nRW 1 ZERO\n", .corrupt, ["version"]),
      ("CID=xyz\nRW 1 ZERO\n", .corrupt, ["CID"]),
      ("RW 1 ZERO\nparentCID=00000001\n", .corrupt, ["parentFileNameHint"]),
    ]
    for (index, c) in cases.enumerated() {
      let path = try Self.descriptor(scratch, c.body, name: "d\(index).vmdk")
      expectVDiskError(c.kind, [path] + c.fragments) { _ = try openChain(path) }
    }
  }

  @Test func descriptorBounds() throws {
    let scratch = try Scratch("vmdk-hostile")
    defer { scratch.remove() }
    // Longer than 1 MiB.
    let long = try Self.descriptor(
      scratch, String(repeating: "# padding padding padding\n", count: 50_000), name: "long.vmdk")
    expectVDiskError(.corrupt, [long, "larger than"]) { _ = try openChain(long) }
    // Too many extents.
    let many = try Self.descriptor(scratch, String(repeating: "RW 1 ZERO\n", count: 9000), name: "many.vmdk")
    expectVDiskError(.corrupt, [many, "more than 8192 extents"]) { _ = try openChain(many) }
    // Extents adding up past the size bound.
    let huge = try Self.descriptor(
      scratch, String(repeating: "RW 70368744177664 ZERO\n", count: 5), name: "huge.vmdk")
    expectVDiskError(.corrupt, [huge, "add up to more than"]) { _ = try openChain(huge) }
  }

  @Test func cowdAndSESparseFaults() throws {
    let scratch = try Scratch("vmdk-hostile")
    defer { scratch.remove() }
    let cowd = scratch.file("c.vmdk")
    try VMDKBuilder.cowd(cowd, capacity: 8192, grainSectors: 8, grains: [0: pattern(1, count: 4096)])
    try patchLE(cowd, at: 24, 0, width: 4)  // a GD of 0 entries cannot cover the capacity
    expectVDiskError(.corrupt, [cowd, "COWD grain directory", "less than the capacity"]) {
      _ = try openChain(cowd)
    }
    try VMDKBuilder.cowd(cowd, capacity: 8192, grainSectors: 8, grains: [0: pattern(1, count: 4096)])
    try patchLE(cowd, at: 20, 0xffff_fff0, width: 4)
    expectVDiskError(.corrupt, [cowd, "COWD grain directory", "outside the file"]) { _ = try openChain(cowd) }

    let se = scratch.file("se.vmdk")
    let descriptor = try Self.descriptor(scratch, "RW 8192 SESPARSE \"se.vmdk\"\n", name: "sed.vmdk")
    try VMDKBuilder.seSparse(
      se, capacity: 4 << 20, tables: [0: (slot: 0, entries: [0: 0x7 << 60])], grains: [:])
    var chain = try openChain(descriptor)
    expectVDiskError(.corrupt, [se, "entry 0 is invalid"]) { _ = try chain.read(at: 0, count: 512) }
    try VMDKBuilder.seSparse(
      se, capacity: 4 << 20,
      tables: [0: (slot: 0, entries: [0: VMDKBuilder.seEntry(type: 3, grain: 1 << 40)])],
      grains: [:])
    chain = try openChain(descriptor)
    expectVDiskError(.corrupt, [se, "past the end"]) { _ = try chain.read(at: 0, count: 512) }
    try patchLE(se, at: 4 * 512, 0x2000_0000_0000_0000, width: 8)
    chain = try openChain(descriptor)
    expectVDiskError(.corrupt, [se, "grain directory entry 0 is invalid"]) {
      _ = try chain.read(at: 0, count: 512)
    }
    try patchLE(se, at: 0, 0xdead, width: 8)
    expectVDiskError(.corrupt, [se, "magic"]) { _ = try openChain(descriptor) }
  }
}
