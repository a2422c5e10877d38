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
    let resolved: String
    switch SystemCalls.realPath(path) {
    case .success(let p): resolved = p
    case .failure(let e): throw failure(path, e.code, "cannot resolve mount point")
    }
    let st: stat
    switch SystemCalls.status(resolved) {
    case .success(let s): st = s
    case .failure(let e): throw failure(path, e.code, "cannot stat mount point")
    }
    guard (st.st_mode & S_IFMT) == S_IFDIR else {
      throw VDiskError(.invalidArgument, path: path, "mount point is not a directory", errno: ENOTDIR)
    }
    let parent: stat
    switch SystemCalls.status(resolved == "/" ? "/" : resolved + "/..") {
    case .success(let s): parent = s
    case .failure(let e): throw failure(path, e.code, "cannot stat the parent of the mount point")
    }
    let isRoot = st.st_dev == parent.st_dev && st.st_ino == parent.st_ino
    if st.st_dev != parent.st_dev || isRoot || mountedDevice(at: resolved) != nil {
      throw VDiskError(
        .invalidArgument, path: path, "mount point is already a mount point (unmount it first)", errno: EBUSY)
    }
    return resolved
  }

  private static func failure(_ path: String, _ code: Int32, _ what: String) -> VDiskError {
    let reason = SystemCallError(code).text
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
    switch SystemCalls.writeSmallFile(path, Array("\(kilobytes)\n".utf8)) {
    case .success: logger.debug("read-ahead of \(device) set to \(kilobytes) KiB")
    case .failure(let e): logger.debug("cannot write \(path): \(e.text)")
    }
  }

  /// The whole content of a small /proc file.
  static func readProcFile(_ path: String) -> String? {
    SystemCalls.readSmallFile(path).map { String(decoding: $0, as: UTF8.self) }
  }
}
