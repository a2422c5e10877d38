import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// FUSE passthrough on the real kernel (6.9+, CAP_SYS_ADMIN): a qualifying disk.raw is read and
/// written by the kernel straight from the host file. Proved by the daemon's `-d` log: with
/// passthrough no READ or WRITE request for disk.raw's inode reaches it while data flows; with
/// `-o passthrough=off`, or for images that do not qualify, they do.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"), .serialized)
struct PassthroughMountTests {
  /// vdiskfs in the foreground with `-d`, its log in a file; stopped and unmounted by `stop()`.
  final class DebugMount {
    let mountpoint: String
    let log: String
    private let process: Process
    private var stopped = false
    var diskRaw: String { mountpoint + "/disk.raw" }

    init(_ image: String, in scratch: Scratch, options: String) throws {
      mountpoint = try scratch.directory("mnt-\(UUID().uuidString.prefix(8))")
      log = scratch.file("log-\(UUID().uuidString.prefix(8))")
      process = Process()
      process.executableURL = URL(fileURLWithPath: vdiskfsBinary)
      process.arguments = ["-d", "-o", options, image, mountpoint]
      _ = FileManager.default.createFile(atPath: log, contents: nil)
      let output = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
      process.standardInput = FileHandle.nullDevice
      process.standardOutput = output
      process.standardError = output
      try withSpawnLock { try process.run() }
      try output.close()
      for _ in 0..<1500 where !isMounted(mountpoint) && process.isRunning { usleep(20_000) }
      guard isMounted(mountpoint) else {
        stop()
        throw CommandFailed(
          command: [vdiskfsBinary, image, mountpoint],
          result: CommandResult(
            status: 1, stdout: "", stderr: (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""))
      }
    }

    /// Requests of `opcode` (READ, WRITE) for disk.raw logged so far.
    func requests(_ opcode: String) throws -> Int {
      let inode = try statFile(diskRaw).st_ino
      let text = try String(contentsOfFile: log, encoding: .utf8)
      return text.split(separator: "\n").filter {
        $0.contains("opcode: \(opcode) (") && $0.contains("nodeid: \(inode),")
      }.count
    }

    var logText: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

    /// Sends `signal` to the daemon and waits (up to 20 s) for it to exit; its exit status.
    func terminate(with signal: Int32 = SIGTERM) -> Int32? {
      guard process.isRunning else { return process.terminationStatus }
      kill(process.processIdentifier, signal)
      for _ in 0..<1000 where process.isRunning { usleep(20_000) }
      return process.isRunning ? nil : process.terminationStatus
    }

    /// Unmounts and waits for the daemon to exit (it writes back and releases its locks).
    func stop() {
      guard !stopped else { return }
      stopped = true
      if isMounted(mountpoint) { MountedImage(mountpoint: mountpoint).unmount() }
      if process.isRunning { kill(process.processIdentifier, SIGTERM) }
      for _ in 0..<1000 where process.isRunning { usleep(20_000) }
      if isMounted(mountpoint) { MountedImage(mountpoint: mountpoint).unmount() }
    }

    deinit { stop() }
  }

  /// `length` random bytes written at `offset` of `path` by dd, buffered or O_DIRECT.
  func write(_ path: String, from source: String, offsetMiB: Int, countMiB: Int, direct: Bool) throws {
    var arguments = [
      "if=\(source)", "of=\(path)", "bs=1M", "count=\(countMiB)", "seek=\(offsetMiB)", "skip=\(offsetMiB)",
      "conv=notrunc", "status=none",
    ]
    if direct { arguments.append("oflag=direct") }
    try run("dd", arguments)
  }

  /// Reads disk.raw buffered (cmp) and with O_DIRECT (dd iflag=direct) against `oracle`.
  func expectSameBytes(_ mount: DebugMount, _ oracle: String, _ scratch: Scratch) throws {
    #expect(try compareFiles(mount.diskRaw, oracle) == nil)
    let direct = scratch.file("direct-\(UUID().uuidString.prefix(8))")
    try run("dd", ["if=\(mount.diskRaw)", "of=\(direct)", "bs=1M", "iflag=direct", "status=none"])
    #expect(try compareFiles(direct, oracle) == nil)
  }

  @Test func rawImageIsPassedThroughForReadsAndWrites() throws {
    let scratch = try Scratch("pt-raw")
    defer { scratch.remove() }
    let image = scratch.file("disk.img")
    try run("dd", ["if=/dev/urandom", "of=\(image)", "bs=1M", "count=16", "status=none"])
    let fresh = scratch.file("fresh.bin")
    try run("dd", ["if=/dev/urandom", "of=\(fresh)", "bs=1M", "count=16", "status=none"])
    let oracle = scratch.file("oracle.raw")
    try Qemu.img("convert", "-f", "raw", "-O", "raw", image, oracle)

    let mount = try DebugMount(image, in: scratch, options: "rw,format=raw")
    defer { mount.stop() }
    try expectSameBytes(mount, oracle, scratch)
    try write(mount.diskRaw, from: fresh, offsetMiB: 2, countMiB: 3, direct: false)
    try write(mount.diskRaw, from: fresh, offsetMiB: 9, countMiB: 2, direct: true)
    try write(oracle, from: fresh, offsetMiB: 2, countMiB: 3, direct: false)
    try write(oracle, from: fresh, offsetMiB: 9, countMiB: 2, direct: false)
    try run("sync", [mount.diskRaw])
    try expectSameBytes(mount, oracle, scratch)
    #expect(try statFile(mount.diskRaw).st_size == 16 << 20)
    #expect(mount.logText.contains("passthrough: \(image) is backing id"))
    #expect(try mount.requests("READ") == 0, "reads reached the daemon")
    #expect(try mount.requests("WRITE") == 0, "writes reached the daemon")
    mount.stop()
    #expect(!isMounted(mount.mountpoint))
    #expect(try compareFiles(image, oracle) == nil)
    #expect((try Qemu.img("compare", "-f", "raw", "-F", "raw", image, oracle)).contains("identical"))
  }

  /// A write past the end through passthrough grows the host file (the kernel writes it, no
  /// daemon refuses it): the size reported afterwards is the file's.
  @Test func growthThroughPassthroughIsReported() throws {
    let scratch = try Scratch("pt-grow")
    defer { scratch.remove() }
    let image = scratch.file("disk.img")
    try run("truncate", ["-s", "4M", image])
    let mount = try DebugMount(image, in: scratch, options: "rw,format=raw")
    defer { mount.stop() }
    try run(
      "dd",
      ["if=/dev/urandom", "of=\(mount.diskRaw)", "bs=1M", "count=1", "seek=5", "conv=notrunc", "status=none"])
    #expect(try statFile(mount.diskRaw).st_size == 6 << 20)
    #expect(try statFile(image).st_size == 6 << 20)
    #expect(try mount.requests("WRITE") == 0)
  }

  /// The kernel's passthrough writes never reach the daemon: a partition table written through
  /// disk.raw still shows up in partitions/, and a partition file read before a write to its
  /// bytes through disk.raw shows the new bytes after it (it takes no page cache then).
  @Test func partitionsFollowWritesThroughPassthrough() throws {
    let scratch = try Scratch("pt-parts")
    defer { scratch.remove() }
    let image = scratch.file("disk.img")
    try run("truncate", ["-s", "8M", image])
    let mount = try DebugMount(image, in: scratch, options: "rw,format=raw")
    defer { mount.stop() }
    #expect(try listing(mount.mountpoint + "/partitions").isEmpty)
    try sh("printf 'start=2048, size=4096, type=83\\n' | sfdisk -q \(mount.diskRaw)")
    #expect(try mount.requests("WRITE") == 0)
    var parts: [String] = []
    for _ in 0..<100 {
      parts = try listing(mount.mountpoint + "/partitions")
      if !parts.isEmpty { break }
      usleep(50_000)
    }
    #expect(parts == ["p1.raw"])
    let partition = mount.mountpoint + "/partitions/p1.raw"
    let before = try run("cmp", ["-n", "4096", partition, "/dev/zero"], check: false)
    #expect(before.status == 0)
    try sh("printf 'new bytes' | dd of=\(mount.diskRaw) bs=1 seek=\(2048 * 512) conv=notrunc status=none")
    let after = try run("head", ["-c", "9", partition]).stdout
    #expect(after == "new bytes")
  }

  func listing(_ path: String) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: path).sorted()
  }

  @Test func passthroughOffServesEveryReadAndWrite() throws {
    let scratch = try Scratch("pt-off")
    defer { scratch.remove() }
    let image = scratch.file("disk.img")
    try run("dd", ["if=/dev/urandom", "of=\(image)", "bs=1M", "count=8", "status=none"])
    let oracle = scratch.file("oracle.raw")
    try run("cp", [image, oracle])
    let mount = try DebugMount(image, in: scratch, options: "rw,format=raw,passthrough=off")
    defer { mount.stop() }
    try expectSameBytes(mount, oracle, scratch)
    try write(mount.diskRaw, from: oracle, offsetMiB: 1, countMiB: 1, direct: true)
    #expect(try mount.requests("READ") > 0)
    #expect(try mount.requests("WRITE") > 0)
    #expect(!mount.logText.contains("backing id"))
  }

  /// A probed raw image (no format=raw) is not written through passthrough: every write must
  /// pass the probe guard. Read-only, it is passed through.
  @Test func probedRawIsPassedThroughOnlyReadOnly() throws {
    let scratch = try Scratch("pt-probed")
    defer { scratch.remove() }
    let image = scratch.file("disk.img")
    try run("dd", ["if=/dev/urandom", "of=\(image)", "bs=1M", "count=4", "status=none"])
    let rw = try DebugMount(image, in: scratch, options: "rw")
    try write(rw.diskRaw, from: image, offsetMiB: 1, countMiB: 1, direct: true)
    try expectSameBytes(rw, image, scratch)
    #expect(try rw.requests("READ") > 0 && rw.requests("WRITE") > 0)
    rw.stop()
    let ro = try DebugMount(image, in: scratch, options: "ro")
    defer { ro.stop() }
    try expectSameBytes(ro, image, scratch)
    #expect(try ro.requests("READ") == 0)
  }

  /// monolithicFlat VMDK: passed through read-only (its size is the descriptor's); read-write,
  /// the daemon serves it and the image stays consistent.
  @Test func monolithicFlatVMDKIsPassedThroughReadOnly() throws {
    let scratch = try Scratch("pt-vmdk")
    defer { scratch.remove() }
    let source = scratch.file("source.raw")
    try run("dd", ["if=/dev/urandom", "of=\(source)", "bs=1M", "count=8", "status=none"])
    let image = scratch.file("flat.vmdk")
    try Qemu.img("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=monolithicFlat", source, image)
    let oracle = scratch.file("oracle.raw")
    try Qemu.img("convert", "-O", "raw", image, oracle)

    let ro = try DebugMount(image, in: scratch, options: "ro")
    try expectSameBytes(ro, oracle, scratch)
    #expect(try ro.requests("READ") == 0, "reads reached the daemon")
    #expect(ro.logText.contains("passthrough: "))
    ro.stop()

    let rw = try DebugMount(image, in: scratch, options: "rw")
    defer { rw.stop() }
    let fresh = scratch.file("fresh.bin")
    try run("dd", ["if=/dev/urandom", "of=\(fresh)", "bs=1M", "count=8", "status=none"])
    try write(rw.diskRaw, from: fresh, offsetMiB: 1, countMiB: 2, direct: false)
    try write(rw.diskRaw, from: fresh, offsetMiB: 5, countMiB: 1, direct: true)
    try write(oracle, from: fresh, offsetMiB: 1, countMiB: 2, direct: false)
    try write(oracle, from: fresh, offsetMiB: 5, countMiB: 1, direct: false)
    try expectSameBytes(rw, oracle, scratch)
    #expect(try rw.requests("WRITE") > 0 && rw.requests("READ") > 0)
    rw.stop()
    #expect((try Qemu.img("compare", "-F", "raw", image, oracle)).contains("identical"))
  }

  /// Not passed through: a fixed VHD (the host file is the data plus a footer, and a passthrough
  /// read goes to the end of the host file, footer included), a qcow2, and a qcow2 over a raw
  /// backing file (neither disk.raw nor the layer view of the raw file).
  @Test func otherImagesAreServedByTheDaemon() throws {
    let scratch = try Scratch("pt-other")
    defer { scratch.remove() }
    let base = scratch.file("base.raw")
    try run("dd", ["if=/dev/urandom", "of=\(base)", "bs=1M", "count=4", "status=none"])
    let vhd = scratch.file("fixed.vhd")
    try Qemu.img("convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on", base, vhd)
    let qcow2 = scratch.file("plain.qcow2")
    try Qemu.img("convert", "-f", "raw", "-O", "qcow2", base, qcow2)
    let overlay = scratch.file("overlay.qcow2")
    try Qemu.img("create", "-f", "qcow2", "-F", "raw", "-b", base, overlay)
    // qemu probes a fixed VHD (footer only, at the end) as raw: say vpc.
    for (image, format, mode) in [
      (vhd, "vpc", "ro"), (vhd, "vpc", "rw"), (qcow2, "qcow2", "ro"), (overlay, "qcow2", "rw"),
    ] {
      let oracle = scratch.file("oracle-\(UUID().uuidString.prefix(8)).raw")
      try Qemu.img("convert", "-f", format, "-O", "raw", image, oracle)
      let mount = try DebugMount(image, in: scratch, options: mode)
      defer { mount.stop() }
      try expectSameBytes(mount, oracle, scratch)
      #expect(try mount.requests("READ") > 0, "\(image) \(mode) was passed through")
      #expect(!mount.logText.contains("backing id"), "\(image) \(mode)")
      if image == overlay {
        let layer = mount.mountpoint + "/layers/1-base.raw/disk.raw"
        let direct = scratch.file("layer-\(UUID().uuidString.prefix(8))")
        try run("dd", ["if=\(layer)", "of=\(direct)", "bs=1M", "iflag=direct", "status=none"])
        #expect(try compareFiles(direct, base) == nil)
        #expect(!mount.logText.contains("backing id"))
      }
      mount.stop()
    }
    #expect(try Qemu.img("check", overlay).contains("No errors"))
  }
}
