import Foundation
import TestSupport
import Testing

/// `ls` of a directory of the mount, sorted.
func listing(_ path: String) throws -> [String] {
  try FileManager.default.contentsOfDirectory(atPath: path).sorted()
}

/// The bytes `[offset, offset + length)` of `file` into a new file (for cmp).
func slice(_ file: String, offset: UInt64, length: UInt64, into out: String) throws {
  try run(
    "dd",
    ["if=\(file)", "of=\(out)", "bs=512", "skip=\(offset / 512)", "count=\(length / 512)", "status=none"])
}

/// snapshots/, layers/ and partitions/ through the real binary.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct ViewTreeTests {
  @Test func treeShapeOfAPlainImage() throws {
    let scratch = try Scratch("tree")
    defer { scratch.remove() }
    let image = scratch.file("a.qcow2")
    try Qemu.create(image, size: "4M")
    let mounted = try MountedImage.mount(image, in: scratch)
    defer { mounted.unmount() }
    #expect(try listing(mounted.mountpoint) == ["disk.raw", "layers", "partitions", "snapshots"])
    #expect(try listing(mounted.mountpoint + "/snapshots") == [])
    #expect(try listing(mounted.mountpoint + "/layers") == [])
    #expect(try listing(mounted.mountpoint + "/partitions") == [])
  }

  /// MBR with three primaries and an extended partition holding two logicals: p1–p3, p5, p6 are
  /// the partitions' byte ranges.
  @Test func mbrPartitionsWithLogicals() throws {
    let scratch = try Scratch("mbr")
    defer { scratch.remove() }
    let raw = scratch.file("disk.img")
    try run("truncate", ["-s", "64M", raw])
    try Qemu.scatterPatterns(raw, format: "raw", size: 64 << 20, count: 80, seed: 3, unit: 4096, maxUnits: 64)
    try sh(
      """
      printf 'label: dos\\nstart=2048, size=16384, type=83\\nstart=18432, size=16384, type=83\\n\
      start=34816, size=8192, type=83\\nstart=43008, size=88064, type=5\\n\
      start=45056, size=20480, type=83\\nstart=67584, size=30720, type=83\\n' | sfdisk -q \(raw)
      """)
    let image = scratch.file("mbr.qcow2")
    try Qemu.img("convert", "-O", "qcow2", raw, image)
    let mounted = try MountedImage.mount(image, in: scratch)
    defer { mounted.unmount() }
    let names = try listing(mounted.mountpoint + "/partitions")
    for expected in ["p1.raw", "p2.raw", "p3.raw", "p5.raw", "p6.raw"] { #expect(names.contains(expected)) }
    let table = try JSONSerialization.jsonObject(with: Data(try run("sfdisk", ["-J", raw]).stdout.utf8))
    let parts =
      ((table as? [String: Any])?["partitiontable"] as? [String: Any])?["partitions"] as? [[String: Any]]
      ?? []
    #expect(parts.count == 6)
    for p in parts {
      guard let node = p["node"] as? String, let start = p["start"] as? Int, let size = p["size"] as? Int,
        let number = Int(node.dropFirst(raw.count)), p["type"] as? String != "5"
      else { continue }
      let want = scratch.file("want-\(number)")
      try slice(raw, offset: UInt64(start) * 512, length: UInt64(size) * 512, into: want)
      #expect(try compareFiles(mounted.mountpoint + "/partitions/p\(number).raw", want) == nil, "p\(number)")
    }
  }

  /// GPT with four partitions, ext4 in p2 and xfs in p3: the partition files mount directly
  /// with `mount -o loop,ro` (no losetup -P, no offsets); a damaged primary header falls back to
  /// the backup.
  @Test(arguments: [false, true])
  func gptPartitionsMountDirectly(damagePrimary: Bool) throws {
    loopDeviceGate.wait()
    defer { loopDeviceGate.signal() }
    let scratch = try Scratch("gpt")
    defer { scratch.remove() }
    let files = try scratch.directory("files")
    try sh("cd \(files) && head -c 300k /dev/urandom > a.bin && echo hello > hello.txt")
    let raw = scratch.file("disk.img")
    try run("truncate", ["-s", "512M", raw])
    try run(
      "sgdisk",
      [
        "-o", "-n", "1:2048:+8M", "-n", "2:0:+64M", "-n", "3:0:+320M", "-n", "4:0:+8M", "-c", "2:ext", "-c",
        "3:xfs",
        raw,
      ])
    let info = try run("sgdisk", ["-i", "2", raw]).stdout + (try run("sgdisk", ["-i", "3", raw]).stdout)
    let firsts = info.split(separator: "\n").filter { $0.hasPrefix("First sector:") }
      .compactMap { UInt64($0.split(separator: " ")[2]) }
    try #require(firsts.count == 2)
    try run("mkfs.ext4", ["-q", "-F", "-d", files, "-E", "offset=\(firsts[0] * 512)", raw, "64M"])
    let xfs = scratch.file("xfs.img")
    try run("truncate", ["-s", "320M", xfs])  // mkfs.xfs needs 300 MB
    try run("mkfs.xfs", ["-q", xfs])
    try sh(
      "mkdir -p \(scratch.file("x")) && mount -o loop \(xfs) \(scratch.file("x")) && cp -a \(files)/. \(scratch.file("x"))/ && umount \(scratch.file("x"))"
    )
    try run("dd", ["if=\(xfs)", "of=\(raw)", "bs=512", "seek=\(firsts[1])", "conv=notrunc", "status=none"])
    if damagePrimary {
      try sh("printf 'XXXXXXXX' | dd of=\(raw) bs=1 seek=512 conv=notrunc status=none")
    }
    let image = scratch.file("gpt.qcow2")
    try Qemu.img("convert", "-O", "qcow2", raw, image)
    let mounted = try MountedImage.mount(image, in: scratch)
    defer { mounted.unmount() }
    #expect(try listing(mounted.mountpoint + "/partitions") == ["p1.raw", "p2.raw", "p3.raw", "p4.raw"])
    let want = try sh("cd \(files) && sha256sum a.bin hello.txt").stdout
    for p in ["p2", "p3"] {
      let root = try scratch.directory("root-\(p)")
      try run("mount", ["-o", "loop,ro", mounted.mountpoint + "/partitions/\(p).raw", root])
      defer { _ = try? run("umount", [root], check: false) }
      #expect(try sh("cd \(root) && sha256sum a.bin hello.txt").stdout == want, "\(p)")
    }
  }

  /// Internal snapshots: each view equals qemu's conversion of that snapshot, and stays so while
  /// disk.raw is written.
  @Test func snapshotViewsMatchQemuAndDoNotChange() throws {
    let scratch = try Scratch("snap")
    defer { scratch.remove() }
    let image = scratch.file("s.qcow2")
    try Qemu.create(image, size: "16M")
    try Qemu.io(image, ["write -P 0x11 0 8M"])
    try Qemu.img("snapshot", "-c", "first", image)
    try Qemu.io(image, ["write -P 0x22 4M 8M"])
    try Qemu.img("snapshot", "-c", "second", image)
    try Qemu.io(image, ["write -z 0 2M"])
    var oracles: [String: String] = [:]
    for name in ["first", "second"] {
      let out = scratch.file("\(name).raw")
      try Qemu.img("convert", "-l", "snapshot.name=\(name)", "-O", "raw", image, out)
      oracles[name] = out
    }
    let mounted = try MountedImage.mount(image, in: scratch, writable: true)
    var unmounted = false
    defer { if !unmounted { mounted.unmount() } }
    #expect(try listing(mounted.mountpoint + "/snapshots") == ["first", "second"])
    for (name, oracle) in oracles {
      let view = mounted.mountpoint + "/snapshots/\(name)/disk.raw"
      #expect(try compareFiles(view, oracle) == nil, "\(name)")
      #expect(try statFile(view).st_mode & 0o777 == 0o444)
    }
    let disk = try PositionalFile(mounted.diskRaw)
    try disk.write([UInt8](repeating: 0x33, count: 6 << 20), at: 1 << 20)
    try disk.sync()
    for (name, oracle) in oracles {
      #expect(
        try compareFiles(mounted.mountpoint + "/snapshots/\(name)/disk.raw", oracle) == nil, "\(name) after")
    }
    disk.close()
    mounted.unmount()
    unmounted = true
    try expectCleanCheck(image)
  }

  /// Snapshots QEMU creates or deletes while the image is mounted read-only show up (or go) on
  /// the next listing.
  @Test func snapshotsFollowTheImageWhileMounted() throws {
    let scratch = try Scratch("snaplive")
    defer { scratch.remove() }
    let image = scratch.file("s.qcow2")
    try Qemu.create(image, size: "4M")
    try Qemu.io(image, ["write -P 0x41 0 1M"])
    try Qemu.img("snapshot", "-c", "one", image)
    let mounted = try MountedImage.mount(image, in: scratch, ["-o", "ro,force_share"])
    defer { mounted.unmount() }
    #expect(try listing(mounted.mountpoint + "/snapshots") == ["one"])
    try Qemu.img("snapshot", "-c", "two", image)
    #expect(try listing(mounted.mountpoint + "/snapshots") == ["one", "two"])
    try Qemu.img("snapshot", "-d", "one", image)
    #expect(try listing(mounted.mountpoint + "/snapshots") == ["two"])
    let oracle = scratch.file("two.raw")
    try Qemu.img("convert", "-l", "snapshot.name=two", "-O", "raw", image, oracle)
    #expect(try compareFiles(mounted.mountpoint + "/snapshots/two/disk.raw", oracle) == nil)
  }

  /// layers/<n>-<file>/disk.raw shows the chain from backing layer n down.
  @Test func layersShowEachBackingFile() throws {
    let scratch = try Scratch("layers")
    defer { scratch.remove() }
    let base = scratch.file("base.raw")
    try run("truncate", ["-s", "8M", base])
    try Qemu.io(base, format: "raw", ["write -P 0x01 0 8M"])
    let mid = scratch.file("mid.qcow2")
    try Qemu.create(mid, size: "8M", backing: base, backingFormat: "raw")
    try Qemu.io(mid, ["write -P 0x02 1M 2M"])
    let top = scratch.file("top.qcow2")
    try Qemu.create(top, size: "8M", backing: mid, backingFormat: "qcow2")
    try Qemu.io(top, ["write -P 0x03 2M 2M"])
    let mounted = try MountedImage.mount(top, in: scratch)
    defer { mounted.unmount() }
    #expect(try listing(mounted.mountpoint + "/layers") == ["1-mid.qcow2", "2-base.raw"])
    #expect(
      try compareFiles(
        mounted.mountpoint + "/layers/1-mid.qcow2/disk.raw", try Qemu.rawFile(of: mid, scratch: scratch))
        == nil)
    #expect(try compareFiles(mounted.mountpoint + "/layers/2-base.raw/disk.raw", base) == nil)
    #expect(try listing(mounted.mountpoint + "/layers/1-mid.qcow2") == ["disk.raw", "partitions"])
  }

  /// Writing a new partition table through disk.raw makes partitions/ show it.
  @Test func partitionTableIsReadAgainAfterAWrite() throws {
    let scratch = try Scratch("reread")
    defer { scratch.remove() }
    let image = scratch.file("p.qcow2")
    try Qemu.create(image, size: "32M")
    let mounted = try MountedImage.mount(image, in: scratch, writable: true)
    defer { mounted.unmount() }
    #expect(try listing(mounted.mountpoint + "/partitions") == [])
    try sh(
      "printf 'label: dos\\nstart=2048, size=8192, type=83\\nstart=10240, size=4096, type=83\\n' | sfdisk -q \(mounted.diskRaw)"
    )
    usleep(1_100_000)  // the kernel may cache the old listing for up to a second
    #expect(try listing(mounted.mountpoint + "/partitions") == ["p1.raw", "p2.raw"])
    let p2 = mounted.mountpoint + "/partitions/p2.raw"
    #expect(try statFile(p2).st_size == 4096 * 512)
    #expect(try statFile(p2).st_mode & 0o777 == 0o644)
    // Writing through a partition lands in the disk at the partition's offset.
    let part = try PositionalFile(p2)
    try part.write([0xAB, 0xCD], at: 0)
    part.close()
    #expect(
      try PositionalFile(mounted.diskRaw, flags: O_RDONLY).read(at: 10240 * 512, count: 2) == [0xAB, 0xCD])
  }

  /// A backup run from a snapshot view: sparse copies with cp and tar restore identical content,
  /// and the copy's allocation is close to the data qemu says the snapshot holds.
  @Test func sparseBackupOfASnapshotView() throws {
    let scratch = try Scratch("backup")
    defer { scratch.remove() }
    let image = scratch.file("b.qcow2")
    try Qemu.create(image, size: "256M")
    try Qemu.io(image, ["write -P 0x61 0 4M", "write -P 0x62 100M 8M", "write -P 0x63 255M 1M"])
    try Qemu.img("snapshot", "-c", "nightly", image)
    try Qemu.io(image, ["write -P 0x64 50M 10M"])
    let oracle = scratch.file("oracle.raw")
    try Qemu.img("convert", "-l", "snapshot.name=nightly", "-O", "raw", image, oracle)
    let mounted = try MountedImage.mount(image, in: scratch)
    defer { mounted.unmount() }
    let view = mounted.mountpoint + "/snapshots/nightly/disk.raw"
    let copy = scratch.file("copy.raw")
    try run("cp", ["--sparse=always", view, copy])
    #expect(try compareFiles(copy, oracle) == nil)
    let allocated = UInt64(try statFile(copy).st_blocks) * 512
    #expect(allocated >= 13 << 20 && allocated <= 16 << 20, "allocated \(allocated)")
    #expect(UInt64(try statFile(view).st_blocks) * 512 == 13 << 20)
    let archive = scratch.file("backup.tar")
    try run("tar", ["--sparse", "-C", mounted.mountpoint + "/snapshots/nightly", "-cf", archive, "disk.raw"])
    let restored = try scratch.directory("restored")
    try run("tar", ["-C", restored, "-xf", archive])
    #expect(try compareFiles(restored + "/disk.raw", oracle) == nil)
    #expect(UInt64(try statFile(restored + "/disk.raw").st_blocks) * 512 <= 16 << 20)
  }
}
