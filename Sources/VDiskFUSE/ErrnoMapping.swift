import Logging
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// A POSIX failure of the virtual tree itself (no such name, not a directory, no data past the
/// offset): it already is an errno.
public struct FileSystemError: Error, Equatable, Sendable, CustomStringConvertible {
  public var errno: Int32

  public init(_ errno: Int32) { self.errno = errno }

  public var description: String { String(cString: strerror(errno)) }
}

/// The one place where an error becomes the errno a FUSE request is answered with.
///
/// `VDiskError` kinds: corrupt → EIO (and one log line naming the file and offset), io → its
/// errno or EIO, unsupported → EOPNOTSUPP, noSpace → ENOSPC, readOnly → EROFS, notFound → ENOENT,
/// invalidArgument → EINVAL, locked → EBUSY, notPermitted → EPERM. Never ENOSYS: the kernel would take it as "operation not
/// implemented" and stop asking (for lseek, forever).
/// Error lines go through `limiter` (nil: every one is logged).
func errnoValue(for error: any Error, logger: Logger, limiter: ErrorLogLimiter? = nil) -> Int32 {
  func logError(_ message: @autoclosure () -> String) {
    let (log, suppressed) = limiter?.admit() ?? (true, 0)
    guard log else { return }
    let held = suppressed > 0 ? " (\(suppressed) similar errors not logged)" : ""
    logger.error("\(message())\(held)")
  }
  switch error {
  case let e as FileSystemError:
    return e.errno
  case let e as VDiskError:
    switch e.kind {
    case .corrupt:
      logError("corrupt image: \(e.path) at \(e.offset.map { hex($0) } ?? "unknown offset"): \(e.detail)")
      return EIO
    case .io:
      if let code = e.errno, code > 0, code != ENOSYS { return code }
      return EIO
    case .unsupported: return EOPNOTSUPP
    case .noSpace: return ENOSPC
    case .readOnly: return EROFS
    case .notFound: return ENOENT
    case .invalidArgument: return EINVAL
    case .locked: return EBUSY
    case .notPermitted: return EPERM
    }
  default:
    logError("unexpected error: \(error)")
    return EIO
  }
}
