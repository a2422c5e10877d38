import Foundation
import TestSupport
import Testing

/// Read-write mounts of vdi images, static and dynamic, through the real binary and the shared
/// write workloads (`WriteMountRuns`).
@Suite struct VDIWriteMountTests {
  /// A vdi mounts read-write by default (no "not supported yet" notice): the shared scripted run
  /// (`WriteMountRuns.scripted`: writes through disk.raw, an fsync, a punched hole and the unmount
  /// leave an image `qemu-img check` finds clean and whose content is what was written).
  @Test(arguments: ["on", "off"])
  func mountsReadWriteAndWrites(staticImage: String) throws {
    let scratch = try Scratch("vdi-mount")
    defer { scratch.remove() }
    let image = scratch.file("d.vdi")
    try Qemu.create(image, format: "vdi", size: "8M", options: ["static=\(staticImage)"])
    try Qemu.io(image, format: "vdi", ["write -P 0x3d 0 1M"])
    try WriteMountRuns.scripted(image: image, format: "vdi", scratch: scratch)
  }

  /// The shared differential run (seeded random writes, zero-range and punch-hole, fsyncs and
  /// reads against a mirror), on a prefilled image; QEMU judges the image after the unmount.
  @Test(arguments: ["on", "off"])
  func differential(staticImage: String) throws {
    for seed: UInt64 in [11, 12] {
      let scratch = try Scratch("vdi-wdiff")
      defer { scratch.remove() }
      let image = try Self.image(scratch, staticImage: staticImage, seed: seed)
      try WriteMountRuns.differential(image: image, scratch: scratch, seed: seed)
    }
  }

  /// kill -9 of the daemon at seeded random moments while writing: `qemu-img check` finds no
  /// error and every fsync-acknowledged byte is there.
  @Test(arguments: ["on", "off"])
  func killDuringWrites(staticImage: String) throws {
    for seed: UInt64 in [21, 22, 23] {
      let scratch = try Scratch("vdi-wcrash")
      defer { scratch.remove() }
      let image = try Self.image(scratch, staticImage: staticImage, seed: seed)
      try WriteMountRuns.crash(image: image, scratch: scratch, seed: seed)
    }
  }

  /// mkfs.ext4, files, deletes and fstrim over a dynamic vdi. Discards zero allocated blocks in
  /// place (VDIWriter.discard says why), so no space is expected back.
  @Test func ext4WorkloadWithFstrim() throws {
    let scratch = try Scratch("vdi-wext4")
    defer { scratch.remove() }
    let image = scratch.file("fs.vdi")
    try Qemu.create(image, format: "vdi", size: "512M")
    try WriteMountRuns.ext4(image: image, scratch: scratch, expectTrimmed: false)
  }

  /// A 24 MiB vdi with qemu-io patterns scattered over it.
  static func image(_ scratch: Scratch, staticImage: String, seed: UInt64) throws -> String {
    let image = scratch.file("d.vdi")
    try Qemu.create(image, format: "vdi", size: "24M", options: ["static=\(staticImage)"])
    try Qemu.scatterPatterns(image, format: "vdi", size: 24 << 20, count: 10, seed: seed, maxUnits: 4096)
    return image
  }
}
