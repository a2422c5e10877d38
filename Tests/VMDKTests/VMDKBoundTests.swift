import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore

/// Bounded memory across extents: each sparse extent's grain directory is read whole, so a
/// descriptor listing many extents that name one file with a large directory is refused once
/// their directories pass 256 MiB in all.
@Suite struct VMDKBoundTests {
  static func descriptor(extents: Int) -> String {
    var text = "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
    text += "createType=\"monolithicSparse\"\n\n"
    for _ in 0..<extents { text += "RW 2048 SPARSE \"big.vmdk\"\n" }
    text += "\nddb.virtualHWVersion = \"4\"\nddb.adapterType = \"ide\"\n"
    return text
  }

  @Test func manyExtentsNamingOneLargeDirectoryAreRefused() throws {
    let scratch = try Scratch("vmdk-bound")
    defer { scratch.remove() }
    // 4 TiB in 64 KiB grains: a grain directory of 131072 entries (512 KiB).
    try Qemu.create(scratch.file("big.vmdk"), format: "vmdk", size: "4T")
    let few = scratch.file("few.vmdk")
    try Self.descriptor(extents: 100).write(toFile: few, atomically: true, encoding: .utf8)
    #expect(try openChain(few).virtualSize == 100 * 2048 * 512)
    let many = scratch.file("many.vmdk")
    try Self.descriptor(extents: 600).write(toFile: many, atomically: true, encoding: .utf8)
    expectVDiskError(
      .unsupported, [many, "grain directories take more than 256 MiB", "at extent 513 of 600"]
    ) {
      _ = try openChain(many)
    }
  }
}
