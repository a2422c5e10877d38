import Foundation
import TestSupport
import Testing

/// A qcow version 1 image mounted without `-o ro` falls back to read-only and says why; its
/// disk.raw (over a raw backing file) is what qemu reads.
@Suite struct QCOW1MountTests {
  @Test func mountsReadOnlyWithANotice() throws {
    let scratch = try Scratch("qcow1-mount")
    defer { scratch.remove() }
    let base = scratch.file("base.raw")
    let image = scratch.file("v1.qcow")
    try Qemu.create(base, format: "raw", size: "8M")
    try Qemu.io(base, format: "raw", ["write -P 0x2c 0 8M"])
    try Qemu.create(image, format: "qcow", size: "8M", backing: "base.raw", backingFormat: "raw")
    try Qemu.io(image, format: "qcow", ["write -P 0x3d 1M 100k"])
    let oracle = try Qemu.rawFile(of: image, format: "qcow", scratch: scratch)

    let mnt = try scratch.directory("mnt")
    let r = try run("timeout", ["60", vdiskfsBinary, image, mnt])
    defer { if isMounted(mnt) { _ = try? run("fusermount3", ["-u", "-z", mnt], check: false) } }
    #expect(r.stderr.contains("writing qcow (version 1) images is not supported"), "\(r.stderr)")
    #expect(r.stderr.contains("mounting read-only"), "\(r.stderr)")
    #expect(try statFile(mnt + "/disk.raw").st_mode & 0o222 == 0)
    #expect(try compareFiles(mnt + "/disk.raw", oracle) == nil)
    MountedImage(mountpoint: mnt).unmount()
  }
}
