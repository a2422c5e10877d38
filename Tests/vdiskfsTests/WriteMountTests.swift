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
    let mirrorPath = try Qemu.rawFile(of: image, scratch: scratch)
    let mounted = try MountedImage.mount(image, in: scratch, writable: true)
    var unmounted = false
    defer { if !unmounted { mounted.unmount() } }
    let disk = try PositionalFile(mounted.diskRaw)
    let mirror = try PositionalFile(mirrorPath)
    var rng = SplitMix64(seed: setup.size &* 31)
    for step in 0..<400 {
      let roll = rng.next() % 100
      let length = roll < 60 ? 1 + rng.next() % 9000 : 1 + rng.next() % (1 << 20)
      let offset = rng.next() % (setup.size - length)
      switch roll {
      case 0..<70:
        let byte = UInt8(1 + rng.next() % 255)
        let bytes = (0..<Int(length)).map { byte &+ UInt8(truncatingIfNeeded: $0 / 512) }
        try disk.write(bytes, at: offset)
        try mirror.write(bytes, at: offset)
      case 70..<80:
        try disk.zero(at: offset, length: length, punch: roll < 75)
        try mirror.write([UInt8](repeating: 0, count: Int(length)), at: offset)
      case 80..<85:
        try disk.sync()
      default:
        let a = try disk.read(at: offset, count: Int(length))
        let b = try mirror.read(at: offset, count: Int(length))
        #expect(firstDifference(a, b) == nil, "step \(step): read at \(offset)+\(length) differs")
      }
    }
    try disk.sync()
    #expect(try compareFiles(mounted.diskRaw, mirrorPath) == nil)
    disk.close()
    mounted.unmount()
    unmounted = true
    try expectCleanCheck(image)
    try expectSameContent(image, mirrorPath)
  }

  /// The real workload: mkfs.ext4 on a loop device over disk.raw, a few thousand files, fstrim,
  /// then QEMU's check and e2fsck on the result, and every file's checksum.
  @Test func ext4WorkloadWithFstrim() throws {
    loopDeviceGate.wait()
    defer { loopDeviceGate.signal() }
    let scratch = try Scratch("wext4")
    defer { scratch.remove() }
    let image = scratch.file("fs.qcow2")
    try Qemu.create(image, size: "2G")
    let tree = try scratch.directory("tree")
    try sh(
      """
      set -e; cd '\(tree)'
      for d in $(seq 1 30); do mkdir d$d; for f in $(seq 1 100); do head -c $(( (d * 997 + f * 131) % 20000 )) /dev/urandom > d$d/f$f; done; done
      head -c 20M /dev/urandom > big.bin
      find . -type f -exec sha256sum {} + | sort > '\(scratch.file("want.sums"))'
      """)
    let mounted = try MountedImage.mount(image, in: scratch, writable: true)
    var unmounted = false
    defer { if !unmounted { mounted.unmount() } }
    let loop = try run("losetup", ["-f", "--show", mounted.diskRaw]).stdout
      .trimmingCharacters(in: .whitespacesAndNewlines)
    var detached = false
    defer { if !detached { _ = try? run("losetup", ["-d", loop], check: false) } }
    try run("mkfs.ext4", ["-q", "-F", loop])
    let root = try scratch.directory("root")
    try run("mount", [loop, root])
    var rootMounted = true
    defer { if rootMounted { _ = try? run("umount", [root], check: false) } }
    try sh("cp -a '\(tree)'/. '\(root)'/ && head -c 20M /dev/urandom > '\(root)'/trash.bin && sync")
    usleep(1_100_000)  // the kernel caches disk.raw's attributes for up to a second
    let blocksBefore = UInt64(try statFile(mounted.diskRaw).st_blocks) * 512
    try sh("rm -rf '\(root)'/d1 '\(root)'/trash.bin && sync")
    try run("fstrim", [root])
    usleep(1_100_000)
    let blocksAfter = UInt64(try statFile(mounted.diskRaw).st_blocks) * 512
    // fstrim reached vdiskfs as discards: the deleted files' clusters are no longer held.
    #expect(blocksAfter + (15 << 20) <= blocksBefore, "st_blocks \(blocksBefore) → \(blocksAfter) bytes")
    try run("umount", [root])
    rootMounted = false
    try run("losetup", ["-d", loop])
    detached = true
    mounted.unmount()
    unmounted = true

    try expectCleanCheck(image)
    let raw = try Qemu.rawFile(of: image, scratch: scratch)
    let fsck = try run("e2fsck", ["-fn", raw], check: false)
    #expect(fsck.status == 0, "e2fsck: \(fsck.stdout)\(fsck.stderr)")
    let check = try scratch.directory("check")
    try run("mount", ["-o", "ro,loop", raw, check])
    defer { _ = try? run("umount", [check], check: false) }
    let got = try sh("cd '\(check)' && find . -type f ! -path './lost+found/*' -exec sha256sum {} + | sort")
      .stdout
    let want =
      try String(contentsOfFile: scratch.file("want.sums"), encoding: .utf8)
      .split(separator: "\n").filter { !$0.contains("./d1/") }.joined(separator: "\n") + "\n"
    #expect(got == want)
  }

  /// kill -9 the daemon at a random moment while writing with periodic fsync: QEMU finds no
  /// corruption (leaks allowed) and every byte acknowledged by a completed fsync is there.
  @Test(arguments: [UInt64(1), 2, 3])
  func crashAfterFsyncLosesNothing(_ seed: UInt64) throws {
    let scratch = try Scratch("wcrash")
    defer { scratch.remove() }
    let image = scratch.file("c.qcow2")
    let size: UInt64 = 32 << 20
    try Qemu.create(image, size: "\(size)", options: ["cluster_size=4096"])
    let mnt = try scratch.directory("mnt")
    try run(vdiskfsBinary, [image, mnt])
    defer { _ = try? run("fusermount3", ["-u", "-z", mnt], check: false) }
    let disk = try PositionalFile(mnt + "/disk.raw")
    var rng = SplitMix64(seed: seed)
    var acknowledged: [(UInt64, [UInt8])] = []
    var pending: [(UInt64, [UInt8])] = []
    let killAt = 20 + Int(rng.next() % 60)
    for step in 0..<100 {
      let length = 1 + Int(rng.next() % 70000)
      let offset = rng.next() % (size - UInt64(length))
      let bytes = [UInt8](repeating: UInt8(1 + step % 250), count: length)
      try disk.write(bytes, at: offset)
      pending.append((offset, bytes))
      if step % 7 == 6 {
        try disk.sync()
        acknowledged += pending
        pending = []
      }
      if step == killAt { break }
    }
    // (^ keeps pkill from matching the shell that runs it.)
    try sh("pkill -KILL -f -- '^\(vdiskfsBinary) \(image) \(mnt)'; sleep 0.2")
    disk.close()
    _ = try run("fusermount3", ["-u", "-z", mnt], check: false)
    waitForDaemonExit(mnt)
    let check = try qemuCheck(image)
    #expect(check.status == 0 || check.status == 3, "qemu-img check: \(check.stdout)\(check.stderr)")
    #expect(!check.stdout.contains("ERROR"), "\(check.stdout)")
    // Every acknowledged byte is there, unless a later write (acknowledged or not: it may have
    // reached the image before the kill) covers it with that write's value.
    let content = try Qemu.rawContent(of: image, scratch: scratch)
    let writes = acknowledged + pending
    var mismatches = 0
    for (index, (offset, bytes)) in acknowledged.enumerated() {
      for i in 0..<bytes.count {
        let at = Int(offset) + i
        var allowed: Set<UInt8> = [bytes[i]]
        for (laterOffset, later) in writes[(index + 1)...]
        where Int(laterOffset) <= at && at < Int(laterOffset) + later.count {
          allowed.insert(later[at - Int(laterOffset)])
        }
        if !allowed.contains(content[at]) { mismatches += 1 }
      }
    }
    #expect(mismatches == 0, "\(mismatches) acknowledged bytes missing after kill -9")
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
    try run("fusermount3", ["-u", mnt])
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
