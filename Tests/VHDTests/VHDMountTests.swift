import Foundation
import TestSupport
import Testing

/// A dynamic vpc image mounted through the real vdiskfs binary.
@Suite(.enabled(if: mountTestsEnabled)) struct VHDMountTests {
  @Test func mountedDynamicVpcMatchesQemu() throws {
    let scratch = try Scratch("vpc-mount")
    defer { scratch.remove() }
    let image = scratch.file("m.vhd")
    try Qemu.create(image, format: "vpc", size: "7M")
    try Qemu.io(
      image, format: "vpc", ["write -P 0x61 0 1M", "write -P 0x62 3M 1536k", "write -P 0x63 6M 512"])
    let raw = try Qemu.rawFile(of: image, format: "vpc", scratch: scratch)
    let mnt = try scratch.directory("mnt")
    try run("timeout", ["60", vdiskfsBinary, image, mnt, "-o", "ro"])
    defer { _ = try? run("fusermount3", ["-u", mnt], check: false) }
    let r = try run("cmp", [mnt + "/disk.raw", raw], check: false)
    #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
  }
}
