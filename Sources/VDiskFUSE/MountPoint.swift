import Logging
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// Checks on a mount point before libfuse mounts over it (libfuse itself mounts over anything),
/// and the kernel facts about it afterwards. Reads /proc/self/mountinfo; never touches the mounted
/// file system itself (a stat there would wait for our own, not yet running, loop).
enum MountPoint {
  /// Resolves `path` and checks it is an existing directory that is not already a mount point.
  /// Returns the resolved path.
  static func validate(_ path: String) throws -> String {
    guard let resolvedPointer = realpath(path, nil) else {
      let e = errno
      throw failure(path, e, "cannot resolve mount point")
    }
    let resolved = String(cString: resolvedPointer)
    free(resolvedPointer)
    var st = stat()
    guard stat(resolved, &st) == 0 else { throw failure(path, errno, "cannot stat mount point") }
    guard (st.st_mode & S_IFMT) == S_IFDIR else {
      throw VDiskError(.invalidArgument, path: path, "mount point is not a directory", errno: ENOTDIR)
    }
    var parent = stat()
    guard stat(resolved == "/" ? "/" : resolved + "/..", &parent) == 0 else {
      throw failure(path, errno, "cannot stat the parent of the mount point")
    }
    let isRoot = st.st_dev == parent.st_dev && st.st_ino == parent.st_ino
    if st.st_dev != parent.st_dev || isRoot || mountedDevice(at: resolved) != nil {
      throw VDiskError(
        .invalidArgument, path: path, "mount point is already a mount point (unmount it first)", errno: EBUSY)
    }
    return resolved
  }

  private static func failure(_ path: String, _ code: Int32, _ what: String) -> VDiskError {
    let reason = String(cString: strerror(code))
    switch code {
    case ENOENT, ENOTDIR: return VDiskError(.notFound, path: path, "\(what): \(reason)", errno: code)
    case ENOTCONN:
      return VDiskError(
        .io, path: path, "\(what): \(reason) (a stale FUSE mount? try fusermount3 -u)", errno: code)
    default: return VDiskError(.io, path: path, "\(what): \(reason)", errno: code)
    }
  }

  /// The `major:minor` of the file system mounted last at `resolved`, from /proc/self/mountinfo;
  /// nil when nothing is mounted there.
  static func mountedDevice(at resolved: String) -> String? {
    guard let text = readProcFile("/proc/self/mountinfo") else { return nil }
    var found: String?
    for line in text.split(separator: "\n") {
      // id parent major:minor root mountpoint options … (proc(5))
      let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: false)
      guard fields.count >= 5 else { continue }
      if unescapeMountField(fields[4]) == resolved { found = String(fields[2]) }
    }
    return found
  }

  /// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
  static func unescapeMountField(_ field: Substring) -> String {
    var bytes: [UInt8] = []
    let utf8 = Array(field.utf8)
    var i = 0
    while i < utf8.count {
      if utf8[i] == UInt8(ascii: "\\"), i + 3 < utf8.count,
        let value = UInt8(String(decoding: utf8[(i + 1)...(i + 3)], as: UTF8.self), radix: 8)
      {
        bytes.append(value)
        i += 4
      } else {
        bytes.append(utf8[i])
        i += 1
      }
    }
    return String(decoding: bytes, as: UTF8.self)
  }

  /// Sets the read-ahead of the FUSE connection's backing device (`/sys/class/bdi/<dev>/
  /// read_ahead_kb`); buffered reads then reach the file system in requests of that size instead
  /// of the 128 KiB default. Must run after the INIT reply (the kernel lowers the value to the
  /// INIT answer), i.e. once a later request has arrived. Best effort: root only.
  static func setReadAhead(kilobytes: Int, device: String, logger: Logger) {
    let path = "/sys/class/bdi/\(device)/read_ahead_kb"
    let fd = open(path, O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else {
      logger.debug("cannot open \(path): \(String(cString: strerror(errno)))")
      return
    }
    defer { close(fd) }
    let text = Array("\(kilobytes)\n".utf8)
    let n = text.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    if n != text.count {
      logger.debug("cannot write \(path): \(String(cString: strerror(errno)))")
    } else {
      logger.debug("read-ahead of \(device) set to \(kilobytes) KiB")
    }
  }

  /// The whole content of a small /proc file.
  static func readProcFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
      let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
      if n < 0 && errno == EINTR { continue }
      guard n > 0 else { break }
      bytes += chunk[0..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
  }
}
