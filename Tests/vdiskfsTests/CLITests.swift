import Foundation
import TestSupport
import Testing

@Suite struct CLITests {
  @Test func helpDocumentsExitCodes() throws {
    let r = try run(vdiskfsBinary, ["--help"])
    #expect(r.stdout.contains("Exit codes"))
    #expect(r.stdout.contains("info"))
  }

  @Test func unknownMountOptionIsAUsageError() throws {
    let scratch = try Scratch("cli")
    defer { scratch.remove() }
    let img = scratch.file("a.qcow2")
    try Qemu.create(img, size: "1M")
    let r = try run(vdiskfsBinary, [img, scratch.path, "-o", "ro,frobnicate"], check: false)
    #expect(r.status == 2)
    #expect(r.stderr.contains("frobnicate"))
  }

  @Test func badReadAheadIsAUsageError() throws {
    let scratch = try Scratch("cli")
    defer { scratch.remove() }
    let img = scratch.file("a.qcow2")
    try Qemu.create(img, size: "1M")
    for bad in ["read_ahead_kb=lots", "read_ahead_kb=-1", "read_ahead_kb=70000", "read_ahead_kb"] {
      let r = try run(vdiskfsBinary, [img, scratch.path, "-o", "ro,\(bad)"], check: false)
      #expect(r.status == 2, "\(bad)")
      #expect(r.stderr.contains("read_ahead_kb"), "\(bad)")
    }
  }

  @Test func missingImageIsNotFound() throws {
    let scratch = try Scratch("cli")
    defer { scratch.remove() }
    let r = try run(vdiskfsBinary, [scratch.file("nope.qcow2"), scratch.path], check: false)
    #expect(r.status == 3)
    #expect(r.stderr.contains("nope.qcow2"))
  }

  @Test func badCacheSizeIsAUsageError() throws {
    let scratch = try Scratch("cli")
    defer { scratch.remove() }
    let img = scratch.file("a.qcow2")
    try Qemu.create(img, size: "1M")
    let r = try run(vdiskfsBinary, [img, scratch.path, "--cache-size", "lots"], check: false)
    #expect(r.status == 2)
  }

  /// The disk size of a VMDK counts every extent file, as qemu-img's does: a monolithicFlat,
  /// a split flat and a split sparse image.
  @Test(arguments: ["monolithicFlat", "twoGbMaxExtentFlat", "twoGbMaxExtentSparse"])
  func infoDiskSizeOfAVMDKCountsItsExtents(_ subformat: String) throws {
    let scratch = try Scratch("cli-vmdk-size")
    defer { scratch.remove() }
    let img = scratch.file("d.vmdk")
    try Qemu.create(img, format: "vmdk", size: "3G", options: ["subformat=\(subformat)"])
    try Qemu.io(img, format: "vmdk", ["write -P 0x5a 0 1M", "write -P 0x33 2100M 1M"])
    func actualSize(_ json: String) throws -> Int {
      let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
      return try #require(object["actual-size"] as? Int)
    }
    let ours = try actualSize(try run(vdiskfsBinary, ["info", "--output", "json", img]).stdout)
    let theirs = try actualSize(try Qemu.img(["info", "--output=json", img]))
    #expect(ours == theirs, "\(subformat): vdiskfs \(ours), qemu-img \(theirs)")
    #expect(ours > 2 << 20, "\(subformat): \(ours) counts the extents' data")
  }

  /// `vdiskfs info --output json` against `qemu-img info --output=json` for the shared fields.
  @Test func infoJSONMatchesQemuImgInfo() throws {
    let scratch = try Scratch("cli")
    defer { scratch.remove() }
    try Qemu.create(scratch.file("base.qcow2"), size: "8M", options: ["compat=0.10", "cluster_size=4096"])
    let img = scratch.file("top.qcow2")
    try Qemu.create(
      img, size: "16M",
      options: ["cluster_size=131072", "extended_l2=on", "lazy_refcounts=on", "refcount_bits=8"],
      backing: "base.qcow2", backingFormat: "qcow2")
    for chain in [false, true] {
      let extra = chain ? ["--backing-chain"] : []
      let ours = try run(vdiskfsBinary, ["info", "--output", "json"] + extra + [img]).stdout
      let theirs = try Qemu.img(["info", "--output=json"] + extra + [img])
      let a = try JSONSerialization.jsonObject(with: Data(ours.utf8))
      let b = try JSONSerialization.jsonObject(with: Data(theirs.utf8))
      let oursList = chain ? try #require(a as? [[String: Any]]) : [try #require(a as? [String: Any])]
      let theirsList = chain ? try #require(b as? [[String: Any]]) : [try #require(b as? [String: Any])]
      #expect(oursList.count == theirsList.count)
      for (o, t) in zip(oursList, theirsList) {
        for key in [
          "virtual-size", "cluster-size", "format", "backing-filename", "backing-filename-format",
          "dirty-flag",
        ] {
          #expect("\(o[key] ?? "nil")" == "\(t[key] ?? "nil")", "\(key)")
        }
        #expect(
          URL(fileURLWithPath: o["filename"] as? String ?? "").lastPathComponent
            == URL(fileURLWithPath: t["filename"] as? String ?? "").lastPathComponent)
        let od = (o["format-specific"] as? [String: Any])?["data"] as? [String: Any] ?? [:]
        let td = (t["format-specific"] as? [String: Any])?["data"] as? [String: Any] ?? [:]
        for key in [
          "compat", "lazy-refcounts", "refcount-bits", "corrupt", "extended-l2", "compression-type",
        ]
        where td[key] != nil {
          #expect("\(od[key] ?? "nil")" == "\(td[key] ?? "nil")", "format-specific \(key)")
        }
      }
    }
    let human = try run(vdiskfsBinary, ["info", img]).stdout
    #expect(human.contains("virtual size: 16 MiB (16777216 bytes)"))
    #expect(human.contains("backing file: base.qcow2"))
  }
}

@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct MountCommandTests {
  @Test func mountpointMustBeAnUnmountedDirectory() throws {
    let scratch = try Scratch("cli")
    defer { scratch.remove() }
    let img = scratch.file("a.qcow2")
    try Qemu.create(img, size: "1M")
    let notDir = scratch.file("file")
    #expect(FileManager.default.createFile(atPath: notDir, contents: Data()))
    var r = try run(vdiskfsBinary, [img, notDir], check: false)
    #expect(r.status == 6, "\(r.stderr)")
    r = try run(vdiskfsBinary, [img, scratch.file("missing-dir")], check: false)
    #expect(r.status == 6, "\(r.stderr)")
    let mounted = try MountedImage.mount(img, in: scratch)
    defer { mounted.unmount() }
    r = try run("timeout", ["20", vdiskfsBinary, img, mounted.mountpoint], check: false)
    #expect(r.status == 6, "\(r.stderr)")
    #expect(r.stderr.contains(mounted.mountpoint))
  }

  /// The argument form mount.fuse3 uses (it adds dev,suid for root), and noise from fstab.
  @Test func acceptsTheMountHelperForm() throws {
    let scratch = try Scratch("cli")
    defer { scratch.remove() }
    let img = scratch.file("a.qcow2")
    try Qemu.create(img, size: "2M")
    try Qemu.io(img, ["write -P 0x61 0 1M"])
    let mounted = try MountedImage.mount(
      img, in: scratch, ["-o", "ro,dev,suid,noatime,allow_other,defaults,x-systemd.automount,nofail"])
    defer { mounted.unmount() }
    let line = try String(contentsOfFile: "/proc/mounts", encoding: .utf8).split(separator: "\n")
      .first { $0.contains(" \(mounted.mountpoint) ") }
    let fields = try #require(line).split(separator: " ")
    #expect(fields[2] == "fuse.vdiskfs" || fields[2] == "fuse")
    #expect(fields[3].split(separator: ",").contains("ro"))
    #expect(fields[3].contains("allow_other"))
    #expect(try compareFiles(mounted.diskRaw, try Qemu.rawFile(of: img, scratch: scratch)) == nil)
  }

  /// mount(8) → mount.fuse3 → vdiskfs, the way fstab and `mount -t fuse.vdiskfs` run it (here as
  /// `-t fuse PROGRAM#SOURCE`, which needs no install into /usr/local/bin), and umount(8).
  @Test func mountAndUmountThroughMountEight() throws {
    let scratch = try Scratch("cli")
    defer { scratch.remove() }
    let img = scratch.file("a.qcow2")
    try Qemu.create(img, size: "3M")
    try Qemu.io(img, ["write -P 0x71 64k 1M"])
    let mnt = try scratch.directory("mnt")
    defer { if isMounted(mnt) { _ = try? run("fusermount3", ["-u", "-z", mnt], check: false) } }
    try run("timeout", ["30", "mount", "-t", "fuse", "\(vdiskfsBinary)#\(img)", mnt, "-o", "ro,nofail"])
    #expect(isMounted(mnt))
    #expect(try compareFiles(mnt + "/disk.raw", try Qemu.rawFile(of: img, scratch: scratch)) == nil)
    try run("umount", [mnt])
    for _ in 0..<50 where isMounted(mnt) { usleep(20_000) }
    #expect(!isMounted(mnt))
  }

  /// A write-protected image (immutable: even root cannot open it for writing) mounts read-only
  /// with one notice, like mount(8) with a write-protected device; `-o ro` mounts read-only; the
  /// default on a writable qcow2 is read-write.
  @Test func writeProtectedImagesMountReadOnly() throws {
    let scratch = try Scratch("cli")
    defer { scratch.remove() }
    let img = scratch.file("a.qcow2")
    try Qemu.create(img, size: "1M")
    func canOpenForWriting(_ path: String) -> Bool {
      let fd = open(path, O_RDWR)
      if fd >= 0 { close(fd) }
      return fd >= 0
    }
    do {
      let mounted = try MountedImage.mount(img, in: scratch, ["-o", "ro"])
      defer { mounted.unmount() }
      #expect(!canOpenForWriting(mounted.diskRaw))
      #expect(errno == EROFS)
    }
    try run("chattr", ["+i", img])
    defer { _ = try? run("chattr", ["-i", img], check: false) }
    let mnt = try scratch.directory("mnt-protected")
    let r = try run("timeout", ["60", vdiskfsBinary, img, mnt])
    defer { _ = try? run("fusermount3", ["-u", mnt], check: false) }
    #expect(r.stderr.contains("write-protected"), "\(r.stderr)")
    #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
    #expect(try statFile(mnt + "/disk.raw").st_mode & 0o777 == 0o444)
    #expect(!canOpenForWriting(mnt + "/disk.raw"))
  }

  /// A format without write support mounts read-only without -o ro, and says so in one line.
  @Test func readOnlyFormatsMountReadOnlyWithOneNotice() throws {
    let scratch = try Scratch("cli")
    defer { scratch.remove() }
    // vdiskfs does not write stream-optimized vmdk images.
    let src = scratch.file("src.vmdk")
    try Qemu.create(src, format: "vmdk", size: "2M")
    try Qemu.io(src, format: "vmdk", ["write -P 0x3d 0 1M"])
    let img = scratch.file("a.vmdk")
    try Qemu.img("convert", "-O", "vmdk", "-o", "subformat=streamOptimized", src, img)
    let mnt = try scratch.directory("mnt")
    let r = try run("timeout", ["60", vdiskfsBinary, img, mnt])
    defer { _ = try? run("fusermount3", ["-u", mnt], check: false) }
    #expect(r.stderr.contains("mounting read-only"), "\(r.stderr)")
    #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
    #expect(try statFile(mnt + "/disk.raw").st_mode & 0o777 == 0o444)
    #expect(try compareFiles(mnt + "/disk.raw", try Qemu.rawFile(of: img, scratch: scratch)) == nil)
  }

  /// In the foreground, SIGTERM (and SIGINT, SIGHUP) unmount cleanly and exit 0, even when the
  /// parent shell started the daemon with those signals ignored.
  @Test(arguments: ["TERM", "INT", "HUP"])
  func signalsUnmountCleanly(_ signal: String) throws {
    let scratch = try Scratch("cli")
    defer { scratch.remove() }
    let img = scratch.file("a.qcow2")
    try Qemu.create(img, size: "1M")
    let mnt = try scratch.directory("mnt")
    defer { if isMounted(mnt) { _ = try? run("fusermount3", ["-u", "-z", mnt], check: false) } }
    // `trap '' SIG` makes the child inherit the signal as ignored, as a non-interactive `&` does.
    let script = """
      trap '' INT HUP
      '\(vdiskfsBinary)' -f '\(img)' '\(mnt)' & pid=$!
      for i in $(seq 1 100); do mountpoint -q '\(mnt)' && break; sleep 0.05; done
      mountpoint -q '\(mnt)' || { echo 'not mounted'; kill -9 $pid; exit 90; }
      kill -\(signal) $pid
      wait $pid
      """
    let r = try run("timeout", ["30", "bash", "-c", script], check: false)
    #expect(r.status == 0, "\(r.status) \(r.stdout) \(r.stderr)")
    #expect(!isMounted(mnt))
  }
}
