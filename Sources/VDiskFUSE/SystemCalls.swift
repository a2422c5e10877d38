#if canImport(Glibc)
  import Glibc
#endif

/// The FUSE adapter's system calls outside libfuse and its threads, in one place (as swift-system
/// keeps its syscalls in one file): the rest of the module sees Swift values and errno codes.
enum SystemCalls {
  /// realpath(3): the resolved path, or the errno.
  static func realPath(_ path: String) -> Result<String, SystemCallError> {
    guard let resolved = realpath(path, nil) else { return .failure(SystemCallError(errno)) }
    defer { free(resolved) }
    return .success(String(cString: resolved))
  }

  /// stat(2) of `path`.
  static func status(_ path: String) -> Result<stat, SystemCallError> {
    var st = stat()
    guard stat(path, &st) == 0 else { return .failure(SystemCallError(errno)) }
    return .success(st)
  }

  /// The whole content of a small file (/proc, /sys): read until end of file; nil when it cannot
  /// be opened.
  static func readSmallFile(_ path: String) -> [UInt8]? {
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
    return bytes
  }

  /// Writes `bytes` to the start of an existing file (a /sys setting) in one write(2).
  static func writeSmallFile(_ path: String, _ bytes: [UInt8]) -> Result<Void, SystemCallError> {
    let fd = open(path, O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { return .failure(SystemCallError(errno)) }
    defer { close(fd) }
    let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    if n != bytes.count { return .failure(SystemCallError(n < 0 ? errno : EIO)) }
    return .success(())
  }

  /// clock_gettime(CLOCK_REALTIME).
  static func wallClock() -> NodeTime {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return NodeTime(seconds: ts.tv_sec, nanoseconds: ts.tv_nsec)
  }
}

/// A failed system call's errno, with strerror(3)'s text.
struct SystemCallError: Error, Equatable {
  let code: Int32
  init(_ code: Int32) { self.code = code }
  var text: String { String(cString: strerror(code)) }
}
