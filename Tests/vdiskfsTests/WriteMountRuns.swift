import Foundation
import Synchronization
import TestSupport
import Testing

/// Write workloads through a real `vdiskfs` mount, shared by every writable format's mount tests
/// (`WriteMountTests` for qcow2, `<FORMAT>WriteMountTests` for the others). Each run mounts the
/// image read-write, works on `disk.raw`, unmounts, and has QEMU judge the image.
enum WriteMountRuns {
  /// How an image is judged after a run.
  enum Judge: Sendable {
    /// `qemu-img check` finds no errors (and, after a clean unmount, no leaks either).
    case qemuCheck
    /// `qemu-img check` does not support the format (vpc): it must convert, and compare equal.
    case convertOnly
    /// QEMU cannot open the image (differencing VHDX, VHD differencing built in test code): the
    /// caller's own structural check, if any, is all there is.
    case none
  }

  /// Who reads an image's guest bytes for the mirror and the comparisons: `qemu-img convert`, or
  /// (for images QEMU cannot open) a read-only vdiskfs mount.
  enum Reader: Sendable {
    case qemu, vdiskfs

    /// The image's guest bytes in a new raw file in `scratch` (QEMU reads it as `format`, or
    /// probes when nil: a fixed VHD probes as raw).
    func rawFile(of image: String, format: String?, scratch: Scratch) throws -> String {
      switch self {
      case .qemu:
        return try Qemu.rawFile(of: image, format: format, scratch: scratch)
      case .vdiskfs:
        let path = scratch.file("vdiskfs-\(UUID().uuidString.prefix(8)).raw")
        let mounted = try MountedImage.mount(image, in: scratch)
        defer { mounted.unmount() }
        try run("cp", ["--sparse=always", mounted.diskRaw, path])
        return path
      }
    }

    /// Requires the image's guest bytes to equal the raw file `raw`.
    func expectSame(
      _ image: String, format: String?, _ raw: String, scratch: Scratch, sourceLocation: SourceLocation
    ) throws {
      switch self {
      case .qemu:
        let stated = format.map { ["-f", $0] } ?? []
        let r = try run("qemu-img", ["compare"] + stated + ["-F", "raw", image, raw], check: false)
        #expect(r.status == 0, "qemu-img compare: \(r.stdout)\(r.stderr)", sourceLocation: sourceLocation)
      case .vdiskfs:
        let mounted = try MountedImage.mount(image, in: scratch)
        defer { mounted.unmount() }
        #expect(try compareFiles(mounted.diskRaw, raw) == nil, sourceLocation: sourceLocation)
      }
    }
  }

  /// The scripted first run of a writable format: `vdiskfs IMAGE MNT` with no `-o` mounts
  /// read-write (no "read-only" or "not supported yet" notice, disk.raw writable); three writes
  /// (5000 bytes at 4 KiB, 70000 across units at 3 MiB + 17, one byte just below 7 MiB), an
  /// fsync and a 2 MiB punched hole at 1 MiB go to disk.raw and to a mirror made by `qemu-img
  /// convert`, and a written range reads back. `whileMounted` adds the caller's checks on
  /// disk.raw before the unmount; after it, `qemu-img check -f format` finds the image clean and
  /// `qemu-img compare` finds it equal to the mirror.
  static func scripted(
    image: String, format: String, scratch: Scratch, whileMounted: (PositionalFile) throws -> Void = { _ in },
    sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    let mirror = try Qemu.rawFile(of: image, scratch: scratch)
    let mounted = try MountedImage.mount(image, in: scratch, writable: true)
    var unmounted = false
    defer { if !unmounted { mounted.unmount() } }
    #expect(
      !mounted.notice.contains("not supported yet"), "\(mounted.notice)", sourceLocation: sourceLocation)
    #expect(!mounted.notice.contains("read-only"), "\(mounted.notice)", sourceLocation: sourceLocation)
    #expect(try statFile(mounted.diskRaw).st_mode & 0o200 != 0, sourceLocation: sourceLocation)

    let disk = try PositionalFile(mounted.diskRaw)
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
    #expect(
      try disk.read(at: (3 << 20) + 17, count: 16) == [UInt8](repeating: 0x52, count: 16),
      sourceLocation: sourceLocation)
    try whileMounted(disk)
    disk.close()
    copy.close()
    mounted.unmount()
    unmounted = true

    let check = try run("qemu-img", ["check", "-f", format, image], check: false)
    #expect(check.status == 0, "\(check.stdout)\(check.stderr)", sourceLocation: sourceLocation)
    let compare = try run("qemu-img", ["compare", "-f", format, "-F", "raw", image, mirror], check: false)
    #expect(compare.status == 0, "\(compare.stdout)\(compare.stderr)", sourceLocation: sourceLocation)
  }

  /// Seeded random writes of 1 byte to `maxWrite` bytes (aligned and not), zero-range and
  /// punch-hole, fsyncs and reads on disk.raw and on a mirror raw file made by
  /// `qemu-img convert`; they must read the same throughout. After the unmount the image is judged,
  /// `qemu-img compare` must find it identical to the mirror, and each file of `unchanged`
  /// (backing files) must have kept its checksum. With `expected` (a raw file of the guest bytes
  /// the image was built to hold), what `reader` reads must equal it before the run. Returns the
  /// mirror's path, for the caller's own checks.
  @discardableResult
  static func differential(
    image: String, scratch: Scratch, seed: UInt64, steps: Int = 400, maxWrite: UInt64 = 4 << 20,
    format: String? = nil, judge: Judge = .qemuCheck, reader: Reader = .qemu, unchanged: [String] = [],
    expected: String? = nil, mountArguments: [String] = [], sourceLocation: SourceLocation = #_sourceLocation
  ) throws -> String {
    let sums = try unchanged.map(fileChecksum)
    let mirrorPath = try reader.rawFile(of: image, format: format, scratch: scratch)
    if let expected {
      #expect(
        try compareFiles(mirrorPath, expected) == nil, "seed \(seed): the image reads wrong before the run",
        sourceLocation: sourceLocation)
    }
    let size = UInt64(try statFile(mirrorPath).st_size)
    let mounted = try MountedImage.mount(image, in: scratch, mountArguments, writable: true)
    var unmounted = false
    defer { if !unmounted { mounted.unmount() } }
    let disk = try PositionalFile(mounted.diskRaw)
    let mirror = try PositionalFile(mirrorPath)
    var rng = SplitMix64(seed: seed)
    for step in 0..<steps {
      let roll = rng.next() % 100
      var length = roll < 60 ? 1 + rng.next() % 9000 : 1 + rng.next() % maxWrite
      if rng.next() % 4 == 0 { length = max(512, length & ~511) }  // sector-aligned now and then
      length = min(length, size)
      var offset = rng.next() % (size - length + 1)
      if rng.next() % 4 == 0 { offset &= ~511 }
      switch roll {
      case 0..<70:
        let byte = UInt8(1 + rng.next() % 255)
        let bytes = sectorPattern(byte, count: Int(length))
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
        #expect(
          firstDifference(a, b) == nil, "seed \(seed) step \(step): read at \(offset)+\(length) differs",
          sourceLocation: sourceLocation)
      }
    }
    try disk.sync()
    #expect(try compareFiles(mounted.diskRaw, mirrorPath) == nil, sourceLocation: sourceLocation)
    disk.close()
    mounted.unmount()
    unmounted = true
    try judgeClean(image, format: format, judge, scratch: scratch, sourceLocation: sourceLocation)
    try reader.expectSame(image, format: format, mirrorPath, scratch: scratch, sourceLocation: sourceLocation)
    for (path, sum) in zip(unchanged, sums) {
      #expect(try fileChecksum(path) == sum, "\(path) changed", sourceLocation: sourceLocation)
    }
    return mirrorPath
  }

  /// `kill -9` of the daemon at a seeded random moment while writing with an fsync every seventh
  /// write. Afterwards `afterCrash` judges the image (by default: `qemu-img check` finds no
  /// errors, leaks allowed), and every byte acknowledged by a completed fsync must be in what
  /// `reader` then reads, unless a later write covers it.
  ///
  /// With `killWhen`, the kill comes instead during the first write or fsync in which
  /// `killWhen(image)` holds while the daemon is stopped (see `runKilling`), e.g. with a log entry
  /// written but not yet emptied; a run in which it never holds fails.
  static func crash(
    image: String, scratch: Scratch, seed: UInt64, maxWrite: Int = 70000, format: String? = nil,
    reader: Reader = .qemu,
    afterCrash: (String) throws -> Void = WriteMountRuns.expectNoCorruption,
    killWhen: ((String) throws -> Bool)? = nil, sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    let mirrorPath = try reader.rawFile(of: image, format: format, scratch: scratch)
    let size = UInt64(try statFile(mirrorPath).st_size)
    let mount = try KillableMount(image, scratch: scratch, label: "crash-\(seed)")
    defer { mount.tearDown() }
    let disk = mount.disk
    var rng = SplitMix64(seed: seed)
    var acknowledged: [(UInt64, [UInt8])] = []
    var pending: [(UInt64, [UInt8])] = []
    let killAt = 20 + Int(rng.next() % 60)
    var killed = false
    for step in 0..<100 {
      let length = min(Int(size), 1 + Int(rng.next() % UInt64(maxWrite)))
      let offset = rng.next() % (size - UInt64(length) + 1)
      let bytes = [UInt8](repeating: UInt8(1 + step % 250), count: length)
      pending.append((offset, bytes))
      let fd = disk.fd
      if let killWhen {
        // Metadata goes back through the log during writes (over the cache budget) and fsyncs.
        killed = try runKilling(daemon: mount.pid, image: image, when: killWhen) {
          let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
          return n == bytes.count ? 0 : (n < 0 ? errno : EIO)
        }
        if killed { break }
      } else {
        try disk.write(bytes, at: offset)
      }
      if step % 7 == 6 {
        if let killWhen {
          killed = try runKilling(daemon: mount.pid, image: image, when: killWhen) {
            fsync(fd) == 0 ? 0 : errno
          }
          if killed { break }
        } else {
          try disk.sync()
        }
        acknowledged += pending
        pending = []
      }
      if killWhen == nil && step == killAt { break }
    }
    #expect(
      killWhen == nil || killed, "seed \(seed): the kill condition never held during an fsync",
      sourceLocation: sourceLocation)
    mount.tearDown()
    try afterCrash(image)
    let bytes = [UInt8](
      try Data(contentsOf: URL(fileURLWithPath: reader.rawFile(of: image, format: format, scratch: scratch))))
    let missing = missingAcknowledged(acknowledged, later: pending, in: bytes)
    #expect(
      missing == 0, "seed \(seed): \(missing) acknowledged bytes missing after kill -9",
      sourceLocation: sourceLocation)
  }

  /// Runs `operation` (a write or fsync on disk.raw, returning 0 or an errno) on another thread
  /// and, while it runs, asks `condition` about the image over and over; when it holds, stops
  /// the daemon (SIGSTOP) and, once all its threads have stopped, asks again. If it still holds,
  /// the daemon gets SIGKILL (the operation fails: nothing it covers is acknowledged) and this
  /// returns true; otherwise the daemon continues (SIGCONT), and once the operation has
  /// completed this returns false, or throws its error.
  static func runKilling(
    daemon pid: pid_t, image: String, when condition: (String) throws -> Bool,
    _ operation: @escaping @Sendable () -> Int32
  ) throws -> Bool {
    let finished = DispatchSemaphore(value: 0)
    let result = Mutex<Int32>(0)
    Thread.detachNewThread {
      let r = operation()
      result.withLock { $0 = r }
      finished.signal()
    }
    var stopped = false
    defer {
      if stopped { kill(pid, SIGCONT) }
      finished.wait()  // after a SIGKILL, the kernel ends the operation once /dev/fuse is closed
    }
    while finished.wait(timeout: .now()) != .success {
      guard try condition(image) else { continue }
      kill(pid, SIGSTOP)
      stopped = true
      waitUntilStopped(pid)
      if try condition(image) {
        kill(pid, SIGKILL)
        return true
      }
      kill(pid, SIGCONT)
      stopped = false
    }
    finished.signal()  // for the deferred wait
    let errorNumber = result.withLock { $0 }
    guard errorNumber == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errorNumber) ?? .EIO) }
    return false
  }

  /// The pid of the `vdiskfs IMAGE MNT` daemon.
  static func daemonPID(image: String, mnt: String) throws -> pid_t {
    let found = try run("pgrep", ["-f", "--", "^\(vdiskfsBinary) \(image) \(mnt)"]).stdout
    guard let pid = found.split(separator: "\n").first.flatMap({ pid_t($0) }) else {
      throw CommandFailed(
        command: ["pgrep"], result: CommandResult(status: 1, stdout: found, stderr: "no vdiskfs daemon"))
    }
    return pid
  }

  /// Waits (up to 5 s) until every thread of `pid` is stopped (state T in /proc/PID/task/*/stat;
  /// a thread inside a system call such as fdatasync stops when the call returns).
  static func waitUntilStopped(_ pid: pid_t) {
    let tasks = "/proc/\(pid)/task"
    for _ in 0..<100_000 {
      let ids = (try? FileManager.default.contentsOfDirectory(atPath: tasks)) ?? []
      let running = ids.contains { id in
        guard let stat = try? String(contentsOfFile: "\(tasks)/\(id)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")")
        else { return false }
        let state = stat[stat.index(after: close)...].dropFirst().first
        return state != "T" && state != "t" && state != "Z" && state != "X"
      }
      if !running { return }
      usleep(50)
    }
  }

  /// `qemu-img check` after a crash: exit 0 (clean) or 3 (leaks only), no ERROR line.
  static func expectNoCorruption(_ image: String) throws {
    for problem in try corruptionProblems(image) { Issue.record(Comment(rawValue: problem)) }
  }

  /// What `qemu-img check` finds wrong after a crash, beyond leaked space: nothing when it exits
  /// 0 (clean) or 3 (leaks only) and prints no ERROR line.
  static func corruptionProblems(_ image: String) throws -> [String] {
    let check = try qemuCheck(image)
    guard check.status == 0 || check.status == 3, !check.stdout.contains("ERROR") else {
      return ["qemu-img check (exit \(check.status)): \(check.stdout)\(check.stderr)"]
    }
    return []
  }

  /// The bytes of `acknowledged` writes that `content` does not hold, where no later write (the
  /// acknowledged ones after it, then `later`: unacknowledged writes may have reached the image)
  /// covers them with its own value.
  static func missingAcknowledged(
    _ acknowledged: [(UInt64, [UInt8])], later: [(UInt64, [UInt8])], in content: [UInt8]
  ) -> Int {
    let writes = acknowledged + later
    var missing = 0
    for (index, (offset, bytes)) in acknowledged.enumerated() {
      for i in 0..<bytes.count {
        let at = Int(offset) + i
        guard at < content.count else {
          missing += 1
          continue
        }
        if content[at] == bytes[i] { continue }
        let covered = writes[(index + 1)...].contains { laterOffset, laterBytes in
          Int(laterOffset) <= at && at < Int(laterOffset) + laterBytes.count
            && laterBytes[at - Int(laterOffset)] == content[at]
        }
        if !covered { missing += 1 }
      }
    }
    return missing
  }

  /// The real workload: mkfs.ext4 on a loop device over disk.raw, a few thousand files, deleting
  /// part of them, fstrim; then the image is judged, e2fsck finds the file system clean and every
  /// file's checksum is intact. With `expectTrimmed`, fstrim must also have freed space in the
  /// image (formats that can deallocate).
  static func ext4(
    image: String, scratch: Scratch, format: String? = nil, judge: Judge = .qemuCheck,
    expectTrimmed: Bool = true,
    sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    loopDeviceGate.wait()
    defer { loopDeviceGate.signal() }
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
    if expectTrimmed {
      // fstrim reached vdiskfs as discards: the deleted files' space is no longer held.
      #expect(
        blocksAfter + (15 << 20) <= blocksBefore, "st_blocks \(blocksBefore) → \(blocksAfter) bytes",
        sourceLocation: sourceLocation)
    }
    try run("umount", [root])
    rootMounted = false
    try run("losetup", ["-d", loop])
    detached = true
    mounted.unmount()
    unmounted = true

    try judgeClean(image, format: format, judge, scratch: scratch, sourceLocation: sourceLocation)
    let raw = try Qemu.rawFile(of: image, format: format, scratch: scratch)
    let fsck = try run("e2fsck", ["-fn", raw], check: false)
    #expect(fsck.status == 0, "e2fsck: \(fsck.stdout)\(fsck.stderr)", sourceLocation: sourceLocation)
    let check = try scratch.directory("check")
    try run("mount", ["-o", "ro,loop", raw, check])
    defer { _ = try? run("umount", [check], check: false) }
    let got = try sh("cd '\(check)' && find . -type f ! -path './lost+found/*' -exec sha256sum {} + | sort")
      .stdout
    let want =
      try String(contentsOfFile: scratch.file("want.sums"), encoding: .utf8)
      .split(separator: "\n").filter { !$0.contains("./d1/") }.joined(separator: "\n") + "\n"
    #expect(got == want, sourceLocation: sourceLocation)
  }

  /// After a clean unmount: `qemu-img check` exit 0, or (vpc) a conversion that succeeds.
  static func judgeClean(
    _ image: String, format: String?, _ judge: Judge, scratch: Scratch, sourceLocation: SourceLocation
  ) throws {
    let stated = format.map { ["-f", $0] } ?? []
    switch judge {
    case .qemuCheck:
      let r = try run("qemu-img", ["check"] + stated + [image], check: false)
      #expect(r.status == 0, "qemu-img check: \(r.stdout)\(r.stderr)", sourceLocation: sourceLocation)
    case .convertOnly:
      // (Not to /dev/null: qemu-img refuses to "grow" a device file.)
      let out = scratch.file("judge-\(UUID().uuidString.prefix(8)).raw")
      defer { try? FileManager.default.removeItem(atPath: out) }
      let r = try run("qemu-img", ["convert"] + stated + ["-O", "raw", image, out], check: false)
      #expect(r.status == 0, "qemu-img convert: \(r.stdout)\(r.stderr)", sourceLocation: sourceLocation)
    case .none:
      break
    }
  }

  /// SHA-256 of a whole file, to prove a backing file never changed.
  static func fileChecksum(_ path: String) throws -> String {
    try run("sha256sum", [path]).stdout.split(separator: " ").first.map(String.init) ?? ""
  }
}

/// `count` bytes where sector i (of 512 bytes) holds `byte + i`, filled a sector at a time (a
/// byte-wise map of megabytes is slow in a debug build).
func sectorPattern(_ byte: UInt8, count: Int) -> [UInt8] {
  [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
    var offset = 0
    while offset < count {
      let n = min(512, count - offset)
      let value = Int32(byte &+ UInt8(truncatingIfNeeded: offset / 512))
      if let base = buffer.baseAddress { memset(base + offset, value, n) }
      offset += n
    }
    initialized = count
  }
}
