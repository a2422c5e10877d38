import Foundation
import TestSupport
import Testing

/// A monolithicSparse image mounted by the real binary: disk.raw equals qemu's raw conversion.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct VMDKMountTests {
  @Test func monolithicSparseThroughFUSE() throws {
    let scratch = try Scratch("vmdk-mount")
    defer { scratch.remove() }
    let image = scratch.file("disk.vmdk")
    try Qemu.create(image, format: "vmdk", size: "16M")
    try Qemu.scatterPatterns(image, format: "vmdk", size: 16 << 20, count: 30, seed: 11)
    let expected = try Qemu.rawFile(of: image, scratch: scratch)
    let mnt = try scratch.directory("mnt")
    try run("timeout", ["60", vdiskfsBinary, image, mnt, "-o", "ro"])
    defer {
      if (try? run("fusermount3", ["-u", mnt], check: false))?.status != 0 {
        _ = try? run("fusermount3", ["-u", "-z", mnt], check: false)
      }
    }
    let r = try run("cmp", [mnt + "/disk.raw", expected], check: false)
    #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
  }
}
