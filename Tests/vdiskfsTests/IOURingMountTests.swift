import CLinux
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// FUSE-over-io_uring on the real kernel (6.14+): switched on for the test through the fuse
/// module's `enable_uring` parameter and switched back to what it was in every path. The daemon's
/// `-d` log says how many requests the rings answered; reads, writes, fallocate, SEEK_DATA and
/// SIGTERM write-back go through them and QEMU judges the image afterwards. (`make test` also runs
/// the mount matrix a second time with `enable_uring` on: every mount then takes io_uring.)
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"), .serialized)
struct IOURingMountTests {
  typealias DebugMount = PassthroughMountTests.DebugMount
  static let parameter = "/sys/module/fuse/parameters/enable_uring"

  /// Runs `body` with `enable_uring` set to `on`, restoring its previous value afterwards.
  func withIOURing<R>(_ on: Bool, _ body: () throws -> R) throws -> R {
    let previous = try String(contentsOfFile: Self.parameter, encoding: .utf8)
      .trimmingCharacters(in: .whitespacesAndNewlines)
    try (on ? "Y" : "N").write(toFile: Self.parameter, atomically: false, encoding: .utf8)
    defer { try? previous.write(toFile: Self.parameter, atomically: false, encoding: .utf8) }
    return try body()
  }

  /// The number before `phrase` in the daemon's last log line (nil: no such phrase).
  func count(before phrase: String, in log: String) -> Int? {
    guard let range = log.range(of: phrase) else { return nil }
    let digits = log[..<range.lowerBound].reversed().prefix { $0.isNumber }
    return Int(String(digits.reversed()))
  }

  /// "N requests through io_uring" (nil: not on io_uring).
  func ringRequests(_ log: String) -> Int? { count(before: " requests through io_uring", in: log) }

  /// "M large replies from workers' rings".
  func workerRingCommits(_ log: String) -> Int? {
    count(before: " large replies from workers' rings", in: log)
  }

  /// A qcow2 with data, a zeroed range and holes, and its raw oracle.
  func makeImage(_ scratch: Scratch) throws -> (image: String, oracle: String) {
    let image = scratch.file("a.qcow2")
    try Qemu.create(image, size: "64M")
    try Qemu.scatterPatterns(image, size: 64 << 20, count: 60, seed: 19, unit: 4096, maxUnits: 64)
    try Qemu.io(image, ["write -P 0x61 40M 4M", "write -z 50M 1M"])
    let oracle = scratch.file("oracle.raw")
    try Qemu.img("convert", "-O", "raw", image, oracle)
    return (image, oracle)
  }

  /// The first data offset at or after `offset` of `path` (lseek SEEK_DATA).
  func seekData(_ path: String, from offset: off_t) throws -> off_t {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw POSIXError(.EIO) }
    defer { close(fd) }
    return lseek(fd, offset, clinux_seek_data)
  }

  @Test func readsWritesFallocateAndSeekGoThroughTheRings() throws {
    let scratch = try Scratch("uring-rw")
    defer { scratch.remove() }
    let (image, oracle) = try makeImage(scratch)
    let fresh = scratch.file("fresh.bin")
    try run("dd", ["if=/dev/urandom", "of=\(fresh)", "bs=1M", "count=8", "status=none"])
    try withIOURing(true) {
      let mount = try DebugMount(image, in: scratch, options: "rw,io_uring=on")
      defer { mount.stop() }
      #expect(try compareFiles(mount.diskRaw, oracle) == nil)
      let direct = scratch.file("direct.raw")
      try run("dd", ["if=\(mount.diskRaw)", "of=\(direct)", "bs=1M", "iflag=direct", "status=none"])
      #expect(try compareFiles(direct, oracle) == nil)
      for (target, flags) in [(mount.diskRaw, [String]()), (oracle, [])] {
        try run(
          "dd",
          ["if=\(fresh)", "of=\(target)", "bs=1M", "count=3", "seek=2", "conv=notrunc", "status=none"] + flags
        )
      }
      try run(
        "dd",
        [
          "if=\(fresh)", "of=\(mount.diskRaw)", "bs=4k", "count=64", "seek=3000", "conv=notrunc",
          "oflag=direct",
          "status=none",
        ])
      try run(
        "dd",
        ["if=\(fresh)", "of=\(oracle)", "bs=4k", "count=64", "seek=3000", "conv=notrunc", "status=none"])
      for target in [mount.diskRaw, oracle] {
        try run("fallocate", ["-p", "-o", "\(41 << 20)", "-l", "\(1 << 20)", target])
        try run("fallocate", ["-z", "-o", "\(20 << 20)", "-l", "\(64 << 10)", target])
      }
      try run("sync", [mount.diskRaw])
      #expect(try compareFiles(mount.diskRaw, oracle) == nil)
      // The data after the zeroed megabyte at 50M: SEEK_DATA skips the hole at 41M and lands in
      // the 4 MiB written at 40M, at 42M.
      #expect(try seekData(mount.diskRaw, from: 41 << 20) == 42 << 20)
      #expect(try listing(mount.mountpoint).contains("partitions"))
      #expect(try mount.requests("WRITE") > 0 && mount.requests("READ") > 0)
      mount.stop()
      #expect(!isMounted(mount.mountpoint))
      #expect((ringRequests(mount.logText) ?? 0) > 0, "no request went through io_uring")
      #expect(mount.logText.contains("io_uring: "))
      // The read-ahead's large replies are committed on the workers' own rings (`RingWorkers`).
      #expect((workerRingCommits(mount.logText) ?? 0) > 0, "no large reply through a worker's ring")
    }
    _ = try Qemu.img("check", image)
    #expect((try Qemu.img("compare", "-f", "qcow2", "-F", "raw", image, oracle)).contains("identical"))
  }

  /// SIGTERM with buffered writes not yet synced: the daemon writes them back before exiting.
  @Test func sigtermWritesBackThroughTheRings() throws {
    let scratch = try Scratch("uring-term")
    defer { scratch.remove() }
    let (image, oracle) = try makeImage(scratch)
    let fresh = scratch.file("fresh.bin")
    try run("dd", ["if=/dev/urandom", "of=\(fresh)", "bs=1M", "count=4", "status=none"])
    try withIOURing(true) {
      let mount = try DebugMount(image, in: scratch, options: "rw,io_uring=on")
      defer { mount.stop() }
      for target in [mount.diskRaw, oracle] {
        try run("dd", ["if=\(fresh)", "of=\(target)", "bs=1M", "seek=30", "conv=notrunc", "status=none"])
      }
      #expect(mount.terminate(with: SIGTERM) == 0)
      #expect(!isMounted(mount.mountpoint))
      #expect((ringRequests(mount.logText) ?? 0) > 0)
    }
    _ = try Qemu.img("check", image)
    #expect((try Qemu.img("compare", "-f", "qcow2", "-F", "raw", image, oracle)).contains("identical"))
  }

  /// `io_uring=on` with the switch off: one clear error, exit status non-zero, nothing mounted.
  @Test func onFailsClearlyWhenTheKernelDoesNotOfferIt() throws {
    let scratch = try Scratch("uring-on")
    defer { scratch.remove() }
    let (image, _) = try makeImage(scratch)
    let mnt = try scratch.directory("mnt")
    let r = try withIOURing(false) {
      try run(vdiskfsBinary, [image, mnt, "-o", "ro,io_uring=on"], check: false)
    }
    #expect(r.status != 0)
    #expect(r.stderr.contains("enable_uring"), "\(r.stderr)")
    #expect(!isMounted(mnt))
  }

  /// auto without the switch serves /dev/fuse; `io_uring=off` with it, too.
  @Test func autoFallsBackAndOffStaysOnDevFuse() throws {
    let scratch = try Scratch("uring-auto")
    defer { scratch.remove() }
    let (image, oracle) = try makeImage(scratch)
    for (switchOn, option) in [(false, "ro"), (true, "ro,io_uring=off")] {
      try withIOURing(switchOn) {
        let mount = try DebugMount(image, in: scratch, options: option)
        defer { mount.stop() }
        #expect(try compareFiles(mount.diskRaw, oracle) == nil)
        mount.stop()
        #expect(ringRequests(mount.logText) == nil, "\(option) with enable_uring=\(switchOn)")
      }
    }
  }

  /// The switch is back to what it was after the suite's changes.
  @Test func theSwitchIsRestored() throws {
    let before = try String(contentsOfFile: Self.parameter, encoding: .utf8)
    try withIOURing(before.hasPrefix("N")) {}
    #expect(try String(contentsOfFile: Self.parameter, encoding: .utf8) == before)
  }

  func listing(_ path: String) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: path).sorted()
  }
}
