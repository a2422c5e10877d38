import Foundation
import TestSupport
import Testing

/// Writes through the real binary: what QEMU's own tools say afterwards is the judge.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct WriteMountTests {
  struct Setup: CustomTestStringConvertible, Sendable {
    var name: String
    var size: UInt64
    /// Makes the image; returns its path.
    var make: @Sendable (Scratch, UInt64) throws -> String
    var testDescription: String { name }
  }

  static let setups: [Setup] = [
    Setup(name: "empty 64k", size: 24 << 20) { s, size in
      let img = s.file("w.qcow2")
      try Qemu.create(img, size: "\(size)")
      return img
    },
    Setup(name: "over a backing file with data, 4k clusters", size: 16 << 20) { s, size in
      let base = s.file("base.qcow2")
      try Qemu.create(base, size: "\(size)")
      try Qemu.io(base, ["write -P 0x42 0 \(size)"])
      let img = s.file("w.qcow2")
      try Qemu.create(
        img, size: "\(size)", options: ["cluster_size=4096"], backing: base, backingFormat: "qcow2")
      return img
    },
    Setup(name: "compressed and full, compat 0.10", size: 8 << 20) { s, size in
      let src = s.file("src.qcow2")
      try Qemu.create(src, size: "\(size)")
      try Qemu.io(src, ["write -P 0x17 0 \(size)"])
      let img = s.file("w.qcow2")
      try Qemu.img("convert", "-c", "-O", "qcow2", "-o", "compat=0.10", src, img)
      return img
    },
  ]

  /// Seeded random writes, zeroing and syncs on disk.raw and on a mirror raw file; they must read
  /// the same throughout; afterwards `qemu-img check` is clean and `qemu-img compare` identical.
  @Test(arguments: setups)
  func differentialRandomWrites(_ setup: Setup) throws {
    let scratch = try Scratch("wdiff")
    defer { scratch.remove() }
    let image = try setup.make(scratch, setup.size)
    let backing = scratch.file("base.qcow2")
    let unchanged = FileManager.default.fileExists(atPath: backing) ? [backing] : []
    try WriteMountRuns.differential(
      image: image, scratch: scratch, seed: setup.size &* 31, unchanged: unchanged)
  }

  /// A qcow2 top over a parent of every other format QEMU can make (mixed chains): copy-on-write
  /// fill comes through that format's reader, and the parent never changes.
  @Test(arguments: ["vmdk", "vhdx", "vpc", "vdi"])
  func differentialOverEachFormatParent(_ baseFormat: String) throws {
    let scratch = try Scratch("wmixed")
    defer { scratch.remove() }
    let size: UInt64 = 16 << 20
    let base = scratch.file("base.\(baseFormat)")
    try Qemu.create(base, format: baseFormat, size: "\(size)")
    try Qemu.io(
      base, format: baseFormat, ["write -P 0x5a 0 3M", "write -P 0x6b 5M 1M", "write -P 0x7c 9M 4M"])
    let image = scratch.file("top.qcow2")
    try Qemu.create(
      image, size: "\(size)", options: ["cluster_size=16384"], backing: base, backingFormat: baseFormat)
    try WriteMountRuns.differential(
      image: image, scratch: scratch, seed: 41, steps: 250, maxWrite: 1 << 20, format: "qcow2",
      unchanged: [base])
  }

  /// The real workload: mkfs.ext4 on a loop device over disk.raw, a few thousand files, fstrim,
  /// then QEMU's check and e2fsck on the result, and every file's checksum.
  @Test func ext4WorkloadWithFstrim() throws {
    let scratch = try Scratch("wext4")
    defer { scratch.remove() }
    let image = scratch.file("fs.qcow2")
    try Qemu.create(image, size: "2G")
    try WriteMountRuns.ext4(image: image, scratch: scratch)
  }

  /// kill -9 the daemon at a random moment while writing with periodic fsync: QEMU finds no
  /// corruption (leaks allowed) and every byte acknowledged by a completed fsync is there.
  @Test(arguments: [UInt64(1), 2, 3])
  func crashAfterFsyncLosesNothing(_ seed: UInt64) throws {
    let scratch = try Scratch("wcrash")
    defer { scratch.remove() }
    let image = scratch.file("c.qcow2")
    try Qemu.create(image, size: "\(32 << 20)", options: ["cluster_size=4096"])
    try WriteMountRuns.crash(image: image, scratch: scratch, seed: seed)
  }

  /// fio with 4 writers and crc32c verification, then a verify-only pass after a remount;
  /// buffered, and with O_DIRECT (which vdiskfs answers with parallel direct writes).
  @Test(arguments: [false, true]) func fioRandomWriteVerifies(direct: Bool) throws {
    let scratch = try Scratch("wfio")
    defer { scratch.remove() }
    let image = scratch.file("f.qcow2")
    try Qemu.create(image, size: "256M")
    let common = [
      "--name=v", "--rw=randwrite", "--bs=4k", "--numjobs=4", "--size=32M", "--offset_increment=64M",
      "--verify=crc32c", "--randseed=7", "--ioengine=psync", "--group_reporting", "--verify_state_save=0",
      "--direct=\(direct ? 1 : 0)",
    ]
    do {
      let mounted = try MountedImage.mount(image, in: scratch, writable: true)
      defer { mounted.unmount() }
      let r = try run("fio", common + ["--filename=\(mounted.diskRaw)", "--do_verify=1"], check: false)
      #expect(r.status == 0, "\(r.stdout.suffix(2000))\(r.stderr)")
    }
    try expectCleanCheck(image)
    // Verify after a remount (fio writes nothing with --verify_only, but opens read-write).
    do {
      let mounted = try MountedImage.mount(image, in: scratch, writable: true)
      defer { mounted.unmount() }
      let r = try run("fio", common + ["--filename=\(mounted.diskRaw)", "--verify_only"], check: false)
      #expect(r.status == 0, "\(r.stdout.suffix(2000))\(r.stderr)")
    }
    try expectCleanCheck(image)
  }

  /// A buffered reader that stays open sees what an O_DIRECT writer (direct I/O, parallel
  /// writes: the kernel keeps no pages of its own for it) wrote, through both handles.
  @Test func bufferedReaderSeesDirectWrites() throws {
    let scratch = try Scratch("wdirect")
    defer { scratch.remove() }
    let image = scratch.file("d.qcow2")
    try Qemu.create(image, size: "8M")
    try Qemu.io(image, ["write -P 0x11 0 1M"])
    let mounted = try MountedImage.mount(image, in: scratch, writable: true)
    defer { mounted.unmount() }
    let oDirect: Int32 = 0o40000  // x86-64 and arm64 differ; the CI machines are x86-64
    let reader = open(mounted.diskRaw, O_RDONLY)
    let writer = open(mounted.diskRaw, O_RDWR | oDirect)
    #expect(reader >= 0 && writer >= 0)
    defer {
      close(reader)
      close(writer)
    }
    var page = [UInt8](repeating: 0, count: 8192)
    #expect(pread(reader, &page, 8192, 0) == 8192 && page.allSatisfy { $0 == 0x11 })
    var aligned: UnsafeMutableRawPointer?
    #expect(posix_memalign(&aligned, 4096, 4096) == 0)
    let block = try #require(aligned)
    defer { free(block) }
    block.initializeMemory(as: UInt8.self, repeating: 0x77, count: 4096)
    #expect(pwrite(writer, block, 4096, 4096) == 4096)
    #expect(pread(reader, &page, 8192, 0) == 8192)
    #expect(page[0..<4096].allSatisfy { $0 == 0x11 } && page[4096...].allSatisfy { $0 == 0x77 })
    #expect(pread(writer, block, 4096, 4096) == 4096)
    #expect(block.load(fromByteOffset: 100, as: UInt8.self) == 0x77)
  }

  /// `--overlay`: writes land in a new qcow2 over the base; the base never changes; QEMU checks
  /// and reads the overlay.
  @Test(arguments: ["raw", "qcow2", "vmdk", "vpc", "vhdx", "vdi"])
  func overlayKeepsTheBaseUnchanged(_ baseFormat: String) throws {
    let scratch = try Scratch("woverlay")
    defer { scratch.remove() }
    let base = scratch.file("base.\(baseFormat)")
    try Qemu.create(base, format: baseFormat, size: "16M")
    try Qemu.io(base, format: baseFormat, ["write -P 0x21 0 16M"])
    let before = try sh("sha256sum \(base)").stdout
    let overlay = scratch.file("top.qcow2")
    let mnt = try scratch.directory("mnt")
    try run("timeout", ["60", vdiskfsBinary, "--overlay", overlay, base, mnt])
    var mounted = true
    defer { if mounted { _ = try? run("fusermount3", ["-u", mnt], check: false) } }
    let disk = try PositionalFile(mnt + "/disk.raw")
    try disk.write([UInt8](repeating: 0x99, count: 100_000), at: 12345)
    try disk.zero(at: 8 << 20, length: 1 << 20, punch: true)
    try disk.sync()
    disk.close()
    try unmountRetryingWhileBusy(mnt)
    mounted = false
    for _ in 0..<50 where isMounted(mnt) { usleep(20_000) }
    waitForDaemonExit(mnt)
    #expect(try sh("sha256sum \(base)").stdout == before)
    try expectCleanCheck(overlay)
    let content = try Qemu.rawContent(of: overlay, scratch: scratch)
    #expect(
      content[12344] == 0x21 && content[12345] == 0x99 && content[112_344] == 0x99 && content[112_345] == 0x21
    )
    #expect(content[(8 << 20)..<(9 << 20)].allSatisfy { $0 == 0 })
    #expect(content[9 << 20] == 0x21)
  }

  /// `truncate -s BIGGER disk.raw` grows the qcow2's virtual disk; shrinking is refused.
  @Test func truncateGrowsTheVirtualDisk() throws {
    let scratch = try Scratch("wgrow")
    defer { scratch.remove() }
    let image = scratch.file("g.qcow2")
    try Qemu.create(image, size: "8M", options: ["cluster_size=512"])
    try Qemu.io(image, ["write -P 0x71 0 8M"])
    let mounted = try MountedImage.mount(image, in: scratch, writable: true)
    var unmounted = false
    defer { if !unmounted { mounted.unmount() } }
    let bigger: UInt64 = 200 << 20  // with 512 B clusters, the L1 table must grow
    try run("truncate", ["-s", "\(bigger)", mounted.diskRaw])
    #expect(UInt64(try statFile(mounted.diskRaw).st_size) == bigger)
    let disk = try PositionalFile(mounted.diskRaw)
    try disk.write([UInt8](repeating: 0x72, count: 4096), at: bigger - 4096)
    #expect(try run("truncate", ["-s", "\(4 << 20)", mounted.diskRaw], check: false).status != 0)
    disk.close()
    mounted.unmount()
    unmounted = true
    try expectCleanCheck(image)
    let info = try Qemu.img("info", "--output=json", image)
    #expect(info.contains("\"virtual-size\": \(bigger)"))
    let content = try Qemu.rawContent(of: image, scratch: scratch)
    #expect(content[0] == 0x71 && content[(8 << 20) - 1] == 0x71 && content[8 << 20] == 0)
    #expect(content[Int(bigger) - 4096] == 0x72)
  }

  /// Punching a hole over a backing file that has data there: the range reads as zeros, SEEK_HOLE
  /// sees the hole right away, and qemu-img map agrees after unmount.
  @Test func punchedHolesReadAsZerosAndSeekAsHoles() throws {
    let scratch = try Scratch("wholes")
    defer { scratch.remove() }
    let base = scratch.file("base.qcow2")
    try Qemu.create(base, size: "8M")
    try Qemu.io(base, ["write -P 0x5e 0 8M"])
    let image = scratch.file("top.qcow2")
    try Qemu.create(image, size: "8M", backing: base, backingFormat: "qcow2")
    try Qemu.io(image, ["write -P 0x6f 0 4M"])
    let mounted = try MountedImage.mount(image, in: scratch, writable: true)
    var unmounted = false
    defer { if !unmounted { mounted.unmount() } }
    let disk = try PositionalFile(mounted.diskRaw)
    try disk.zero(at: 1 << 20, length: 1 << 20, punch: true)  // over data in the top
    try disk.zero(at: 5 << 20, length: 1 << 20, punch: true)  // over data only in the backing file
    try disk.zero(at: 7 << 20, length: 512 << 10, punch: false)  // zero range
    #expect(try disk.read(at: 1 << 20, count: 1 << 20).allSatisfy { $0 == 0 })
    #expect(try disk.read(at: 5 << 20, count: 1 << 20).allSatisfy { $0 == 0 })
    #expect(try disk.read(at: 7 << 20, count: 512 << 10).allSatisfy { $0 == 0 })
    #expect(try disk.read(at: 6 << 20, count: 1) == [0x5e])
    let expected: [Range<UInt64>] = [
      0..<(1 << 20), (2 << 20)..<(5 << 20), (6 << 20)..<(7 << 20), (7 << 20) + (512 << 10)..<(8 << 20),
    ]
    #expect(try dataRuns(of: mounted.diskRaw) == expected)
    disk.close()
    mounted.unmount()
    unmounted = true
    try expectCleanCheck(image)
    #expect(try qemuDataRuns(image) == expected)
  }
}
