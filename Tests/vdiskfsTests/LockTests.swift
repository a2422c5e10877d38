import Foundation
import TestSupport
import Testing

/// vdiskfs and QEMU keep each other from writing one image, through QEMU's own locks.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct LockTests {
  @Test func aReadWriteMountLocksQemuOut() throws {
    let scratch = try Scratch("lockcli")
    defer { scratch.remove() }
    let image = scratch.file("disk.img")
    try run("truncate", ["-s", "4M", image])
    do {
      let mounted = try MountedImage.mount(image, in: scratch, writable: true)
      defer { mounted.unmount() }
      // A QEMU writer is refused. (qemu-img info opens raw images without I/O, and qemu-io -r
      // shares writes, so neither conflicts; for qcow2, qemu-img info does.)
      let writer = try run("qemu-io", ["-f", "raw", "-c", "write 0 512", image], check: false)
      #expect(writer.status != 0)
      #expect(writer.stderr.contains("Failed to get \"write\" lock"), "\(writer.stderr)")
      // A second vdiskfs cannot take it either, read-write or read-only.
      for options in [[String](), ["-o", "ro"]] {
        let mnt = try scratch.directory("second-\(options.count)")
        let r = try run("timeout", ["30", vdiskfsBinary, image, mnt] + options, check: false)
        defer { if isMounted(mnt) { _ = try? run("fusermount3", ["-u", mnt], check: false) } }
        #expect(r.status == 8, "\(r.status): \(r.stderr)")
        #expect(r.stderr.contains("lock"))
      }
    }
    #expect(try run("qemu-io", ["-f", "raw", "-c", "write 0 512", image], check: false).status == 0)
  }

  @Test func anImageQemuHoldsWritableIsRefusedUnlessForceShared() throws {
    let scratch = try Scratch("lockcli")
    defer { scratch.remove() }
    let image = scratch.file("vm.qcow2")
    try Qemu.create(image, size: "4M")
    try Qemu.io(image, ["write -P 0x5c 0 64k"])
    let writer = try QemuWriter(image, driver: "qcow2", socket: scratch.file("nbd.sock"))
    defer { writer.stop() }
    for options in [[String](), ["-o", "ro"]] {
      let mnt = try scratch.directory("m\(options.count)")
      let r = try run("timeout", ["30", vdiskfsBinary, image, mnt] + options, check: false)
      defer { if isMounted(mnt) { _ = try? run("fusermount3", ["-u", mnt], check: false) } }
      #expect(r.status == 8, "\(r.status): \(r.stderr)")
      #expect(r.stderr.contains("vm.qcow2") && r.stderr.contains("force_share"), "\(r.stderr)")
    }
    let usage = try run(
      vdiskfsBinary, [image, try scratch.directory("m9"), "-o", "force_share"], check: false)
    #expect(usage.status == 2, "\(usage.stderr)")
    let mounted = try MountedImage.mount(image, in: scratch, ["-o", "ro,force_share"])
    defer { mounted.unmount() }
    #expect(try PositionalFile(mounted.diskRaw, flags: O_RDONLY).read(at: 0, count: 2) == [0x5c, 0x5c])
  }

  /// The files an image names take the locks too: a QEMU writer of a monolithicFlat VMDK's
  /// extent keeps a mount of its descriptor out, and a mounted descriptor keeps QEMU from
  /// writing the extent.
  @Test func anExtentQemuHoldsWritableKeepsTheDescriptorOut() throws {
    let scratch = try Scratch("lockcli")
    defer { scratch.remove() }
    let vmdk = scratch.file("flat.vmdk")
    try Qemu.create(vmdk, format: "vmdk", size: "4M", options: ["subformat=monolithicFlat"])
    let extent = scratch.file("flat-flat.vmdk")
    #expect(FileManager.default.fileExists(atPath: extent))
    do {
      let writer = try QemuWriter(extent, driver: "raw", socket: scratch.file("nbd.sock"))
      defer { writer.stop() }
      let mnt = try scratch.directory("m")
      let r = try run("timeout", ["30", vdiskfsBinary, vmdk, mnt, "-o", "ro"], check: false)
      defer { if isMounted(mnt) { _ = try? run("fusermount3", ["-u", mnt], check: false) } }
      #expect(r.status == 8, "\(r.status): \(r.stderr)")
      #expect(r.stderr.contains(extent) && r.stderr.contains("lock"), "\(r.stderr)")
    }
    try withReadOnlyMount(vmdk, in: scratch) { _ in
      let writer = try run("qemu-io", ["-f", "raw", "-c", "write 0 512", extent], check: false)
      #expect(writer.status != 0)
      #expect(writer.stderr.contains("Failed to get \"write\" lock"), "\(writer.stderr)")
    }
  }
}
