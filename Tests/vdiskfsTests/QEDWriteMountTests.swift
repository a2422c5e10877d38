import Foundation
import TestSupport
import Testing

/// A QED mounted read-write through the real binary: writes through disk.raw (into a backing
/// file's range too), an fsync, a punched hole and the unmount leave an image `qemu-img check`
/// finds clean, need-check cleared, and whose content is what was written.
@Suite struct QEDWriteMountTests {
  @Test func mountsReadWriteAndWrites() throws {
    let scratch = try Scratch("qed-mount")
    defer { scratch.remove() }
    let base = scratch.file("base.raw")
    let image = scratch.file("d.qed")
    try Qemu.create(base, format: "raw", size: "8M")
    try Qemu.io(base, format: "raw", ["write -P 0x2c 0 8M"])
    try Qemu.create(image, format: "qed", size: "8M", backing: "base.raw", backingFormat: "raw")
    try Qemu.io(image, format: "qed", ["write -P 0x3d 0 1M"])
    let mirror = try Qemu.rawFile(of: image, scratch: scratch)

    let mnt = try scratch.directory("mnt")
    let r = try run("timeout", ["60", vdiskfsBinary, image, mnt])
    defer { if isMounted(mnt) { _ = try? run("fusermount3", ["-u", "-z", mnt], check: false) } }
    #expect(!r.stderr.contains("read-only"), "\(r.stderr)")
    #expect(try statFile(mnt + "/disk.raw").st_mode & 0o200 != 0)

    let disk = try PositionalFile(mnt + "/disk.raw")
    let copy = try PositionalFile(mirror)
    let writes: [(UInt64, Int, UInt8)] = [
      (4096, 5000, 0x51), ((3 << 20) + 17, 70_000, 0x52), ((7 << 20) - 1, 1, 0x53),
    ]
    for (offset, count, value) in writes {
      let bytes = [UInt8](repeating: value, count: count)
      try disk.write(bytes, at: offset)
      try copy.write(bytes, at: offset)
    }
    try disk.sync()
    try disk.zero(at: 1 << 20, length: 2 << 20, punch: true)
    try copy.write([UInt8](repeating: 0, count: 2 << 20), at: 1 << 20)
    #expect(try disk.read(at: (3 << 20) + 17, count: 16) == [UInt8](repeating: 0x52, count: 16))
    // Copy-on-write from the backing file around the small write.
    #expect(try disk.read(at: (7 << 20) - 4096, count: 4095) == [UInt8](repeating: 0x2c, count: 4095))
    disk.close()
    copy.close()
    MountedImage(mountpoint: mnt).unmount()

    let check = try run("qemu-img", ["check", "-f", "qed", image], check: false)
    #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
    let compare = try run("qemu-img", ["compare", "-f", "qed", "-F", "raw", image, mirror], check: false)
    #expect(compare.status == 0, "\(compare.stdout)\(compare.stderr)")
    let header = try Data(contentsOf: URL(fileURLWithPath: image)).prefix(24)
    #expect(header[16] & 2 == 0, "need-check left set after the unmount")
  }
}
