import Foundation
import Synchronization
import TestSupport
import Testing
import VDiskCore
import VDiskFUSE

/// The read-write mount's page cache and metadata, in-process (a `TestLayer` chain).
@Suite("FUSE read-write mount", .enabled(if: mountTestsEnabled))
struct ReadWriteMountTests {
  static func readWrite(keepCache: Bool = true, allowOther: Bool = false) -> MountOptions {
    var o = MountOptions()
    o.readOnly = false
    o.keepCache = keepCache
    o.allowOther = allowOther
    return o
  }

  /// Reads all of `path` through a fresh descriptor, then closes it.
  static func readAll(_ path: String) throws -> Int {
    let (fd, e) = Posix.open(path, O_RDONLY)
    guard e == 0 else { throw POSIXError(POSIXErrorCode(rawValue: e) ?? .EIO) }
    defer { close(fd) }
    return Posix.pread(fd, count: 32 << 20, at: 0).0.count
  }

  /// A second open of the read-write disk.raw is served from the page cache: no read reaches the
  /// daemon (the layer counts every lookup). Without keep_cache the same re-read does.
  @Test(arguments: [true, false])
  func reopenedDiskIsServedFromThePageCache(keepCache: Bool) throws {
    let m = try MountedDisk(size: 16 << 20, options: Self.readWrite(keepCache: keepCache))
    defer { #expect(m.stop()) }
    #expect(try Self.readAll(m.disk) == 16 << 20)
    let afterFirst = m.layer.lookups.load(ordering: .relaxed)
    #expect(afterFirst > 0)
    #expect(try Self.readAll(m.disk) == 16 << 20)
    let afterSecond = m.layer.lookups.load(ordering: .relaxed)
    if keepCache {
      #expect(afterSecond == afterFirst, "the re-read reached the daemon")
    } else {
      #expect(afterSecond > afterFirst)
    }
  }

  /// chmod, chown and utimens really change what stat shows (files and directories).
  @Test func chmodChownAndTimesAreApplied() throws {
    let m = try MountedDisk(size: 1 << 20, options: Self.readWrite())
    defer { #expect(m.stop()) }
    let before = time(nil)
    #expect(chmod(m.disk, 0o600) == 0)
    #expect(chown(m.disk, 1234, 5678) == 0)
    var times = [
      timespec(tv_sec: 1_500_000_000, tv_nsec: 123_456_789), timespec(tv_sec: 1_600_000_000, tv_nsec: 5),
    ]
    #expect(utimensat(AT_FDCWD, m.disk, &times, 0) == 0)
    var st = stat()
    #expect(stat(m.disk, &st) == 0)
    #expect(st.st_mode == S_IFREG | 0o600)
    #expect(st.st_uid == 1234 && st.st_gid == 5678)
    #expect(st.st_atim.tv_sec == 1_500_000_000 && st.st_atim.tv_nsec == 123_456_789)
    #expect(st.st_mtim.tv_sec == 1_600_000_000 && st.st_mtim.tv_nsec == 5)
    #expect(st.st_ctim.tv_sec >= before)
    // Only the access time now (UTIME_OMIT keeps the modification time).
    // UTIME_NOW and UTIME_OMIT (<sys/stat.h>, macros Swift does not import).
    times = [timespec(tv_sec: 0, tv_nsec: (1 << 30) - 1), timespec(tv_sec: 0, tv_nsec: (1 << 30) - 2)]
    #expect(utimensat(AT_FDCWD, m.disk, &times, 0) == 0)
    #expect(stat(m.disk, &st) == 0)
    #expect(st.st_atim.tv_sec >= before && st.st_mtim.tv_sec == 1_600_000_000)
    // A directory, too.
    let partitions = m.mountpoint + "/partitions"
    #expect(chmod(partitions, 0o700) == 0)
    #expect(stat(partitions, &st) == 0 && st.st_mode == S_IFDIR | 0o700)
    // The content is what it was.
    let (fd, e) = Posix.open(m.disk, O_RDONLY)
    #expect(e == 0)
    defer { close(fd) }
    #expect(Posix.pread(fd, count: 4096, at: 0).0 == m.layer.expected(at: 0, count: 4096))
  }

  /// The kernel enforces who may change what (default_permissions) against the applied owner
  /// and mode: another user may not chmod root's file, may once it is theirs, and may not read it
  /// once it is 0600 and root's.
  @Test func permissionsAreEnforcedOnTheAppliedModeAndOwner() throws {
    let m = try MountedDisk(size: 1 << 20, options: Self.readWrite(allowOther: true))
    defer { #expect(m.stop()) }
    #expect(chmod(m.scratch.path, 0o755) == 0)  // let the other user reach the mount point
    let nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"]
    let refused = try run("setpriv", nobody + ["chmod", "666", m.disk], check: false)
    #expect(refused.status != 0 && refused.stderr.contains("Operation not permitted"), "\(refused.stderr)")
    var st = stat()
    #expect(stat(m.disk, &st) == 0 && st.st_mode == S_IFREG | 0o644)
    let allowed = try run("setpriv", nobody + ["dd", "if=" + m.disk, "of=/dev/null", "bs=64k"], check: false)
    #expect(allowed.status == 0, "\(allowed.stderr)")

    #expect(chmod(m.disk, 0o600) == 0)
    let denied = try run("setpriv", nobody + ["dd", "if=" + m.disk, "of=/dev/null", "bs=64k"], check: false)
    #expect(denied.status != 0 && denied.stderr.contains("Permission denied"), "\(denied.stderr)")

    #expect(chown(m.disk, 65534, 65534) == 0)
    #expect(try run("setpriv", nobody + ["chmod", "640", m.disk], check: false).status == 0)
    #expect(stat(m.disk, &st) == 0 && st.st_mode == S_IFREG | 0o640 && st.st_uid == 65534)
  }
}
