import CLinux
import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// VDiskCore's system calls beyond swift-system's `FileDescriptor`, in one place: thin wrappers
/// that retry on EINTR and throw the `Errno` the kernel gave. Callers add context (path, offset)
/// when they turn an `Errno` into a `VDiskError`. Linux constants the Swift Glibc module hides
/// come from CLinux, never typed in as numbers.
enum Syscalls {
  /// Runs `call` until it does not fail with EINTR; a result of -1 throws `errno`.
  @inline(__always)
  private static func retrying<T: FixedWidthInteger>(_ call: () -> T) throws(Errno) -> T {
    while true {
      let result = call()
      if result != -1 { return result }
      let e = Glibc.errno
      if e != EINTR { throw Errno(rawValue: e) }
    }
  }

  /// `access(F_OK)`: whether `path` names something (following symbolic links).
  static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

  /// `fstat`.
  static func fileStatus(_ fd: FileDescriptor) throws(Errno) -> FileStatus {
    var st = stat()
    _ = try retrying { fstat(fd.rawValue, &st) }
    return FileStatus(
      device: UInt64(st.st_dev), inode: UInt64(st.st_ino), size: UInt64(max(0, st.st_size)),
      allocatedBytes: UInt64(max(0, st.st_blocks)) * 512, userID: st.st_uid, groupID: st.st_gid,
      modificationSeconds: Int(st.st_mtim.tv_sec), modificationNanoseconds: Int(st.st_mtim.tv_nsec),
      isBlockDevice: st.st_mode & S_IFMT == S_IFBLK)
  }

  /// `stat` (following symbolic links): the type of what `path` names.
  static func fileType(atPath path: String) throws(Errno) -> FileType {
    var st = stat()
    _ = try retrying { stat(path, &st) }
    return FileType(mode: st.st_mode)
  }

  /// `fstat`: the type of the open file.
  static func fileType(_ fd: FileDescriptor) throws(Errno) -> FileType {
    var st = stat()
    _ = try retrying { fstat(fd.rawValue, &st) }
    return FileType(mode: st.st_mode)
  }

  /// `fcntl(F_SETFL)` without `O_NONBLOCK`: once a descriptor opened non-blocking is known to be
  /// a regular file or block device, its I/O blocks as usual.
  static func clearNonBlocking(_ fd: FileDescriptor) throws(Errno) {
    let flags = try retrying { fcntl(fd.rawValue, F_GETFL) }
    guard flags & O_NONBLOCK != 0 else { return }
    _ = try retrying { fcntl(fd.rawValue, F_SETFL, flags & ~O_NONBLOCK) }
  }

  /// `lseek(fd, 0, SEEK_END)`: the size of a block device, whose `st_size` is 0. Moves only the
  /// descriptor's offset, which nothing uses (all I/O is positional).
  static func endOffset(_ fd: FileDescriptor) throws(Errno) -> UInt64 {
    UInt64(try retrying { lseek(fd.rawValue, 0, SEEK_END) })
  }

  /// `lseek(SEEK_DATA)`: the first offset at or after `offset` that holds data; nil when only a
  /// hole follows (ENXIO).
  static func nextData(_ fd: FileDescriptor, from offset: UInt64) throws(Errno) -> UInt64? {
    try seek(fd, offset, clinux_seek_data)
  }

  /// `lseek(SEEK_HOLE)`: the first offset at or after `offset` in a hole (the end of the file
  /// counts as one); nil when `offset` is past the end (ENXIO).
  static func nextHole(_ fd: FileDescriptor, from offset: UInt64) throws(Errno) -> UInt64? {
    try seek(fd, offset, clinux_seek_hole)
  }

  private static func seek(_ fd: FileDescriptor, _ offset: UInt64, _ whence: Int32) throws(Errno) -> UInt64? {
    guard offset <= UInt64(Int64.max) else { throw Errno.invalidArgument }
    do {
      return UInt64(try retrying { lseek(fd.rawValue, off_t(offset), whence) })
    } catch .noSuchAddressOrDevice {
      return nil
    }
  }

  /// `ftruncate`.
  static func truncate(_ fd: FileDescriptor, to size: UInt64) throws(Errno) {
    guard size <= UInt64(Int64.max) else { throw Errno.fileTooLarge }
    _ = try retrying { ftruncate(fd.rawValue, off_t(size)) }
  }

  /// `fallocate` with mode 0: allocates `[offset, offset + length)`, extending the file when the
  /// range reaches past its end and never cutting it; new bytes read as zeros.
  static func allocate(_ fd: FileDescriptor, at offset: UInt64, length: UInt64) throws(Errno) {
    let (end, overflow) = offset.addingReportingOverflow(length)
    guard !overflow, end <= UInt64(Int64.max) else { throw Errno.fileTooLarge }
    _ = try retrying { clinux_fallocate(fd.rawValue, 0, Int64(offset), Int64(length)) }
  }

  /// `fdatasync`.
  static func dataSync(_ fd: FileDescriptor) throws(Errno) {
    _ = try retrying { fdatasync(fd.rawValue) }
  }

  /// The most buffers one `pwritev` takes (`IOV_MAX` on Linux).
  static let maxIOVectors = 1024

  /// Writes `buffers` one after another at `offset` with `pwritev`, continuing after short
  /// writes: one system call for the whole run unless the kernel stops early or there are more
  /// than `maxIOVectors` buffers.
  static func writeAll(_ fd: FileDescriptor, _ buffers: [UnsafeRawBufferPointer], at offset: UInt64)
    throws(Errno)
  {
    var vectors = buffers.compactMap { b -> iovec? in
      guard let base = b.baseAddress, b.count > 0 else { return nil }
      return iovec(iov_base: UnsafeMutableRawPointer(mutating: base), iov_len: b.count)
    }
    var position = offset
    var first = 0
    while first < vectors.count {
      guard position <= UInt64(Int64.max) else { throw Errno.fileTooLarge }
      let count = min(maxIOVectors, vectors.count - first)
      let written = try vectors.withUnsafeBufferPointer { all throws(Errno) -> Int in
        guard let base = all.baseAddress else { return 0 }
        return try retrying { pwritev(fd.rawValue, base + first, Int32(count), off_t(position)) }
      }
      guard written > 0 else { throw Errno.ioError }  // no progress: never loop forever
      position += UInt64(written)
      // Skip what was written: whole buffers, then the written head of a partly written one.
      var rest = written
      while rest > 0, first < vectors.count, vectors[first].iov_len <= rest {
        rest -= vectors[first].iov_len
        first += 1
      }
      if rest > 0 {
        vectors[first].iov_base += rest
        vectors[first].iov_len -= rest
      }
    }
  }

  /// The result of `F_OFD_SETLK`: taken, refused by another lock, or not supported here.
  enum LockResult { case taken, conflict, unsupported }

  /// Takes an open-file-description read lock on the one byte at `offset`.
  static func readLockByte(_ fd: FileDescriptor, at offset: Int64) throws(Errno) -> LockResult {
    var fl = byteLock(F_RDLCK, at: offset)
    do {
      _ = try retrying { fcntl(fd.rawValue, clinux_f_ofd_setlk, &fl) }
      return .taken
    } catch {
      switch error {
      case .invalidArgument, .notSupported, .noLocks: return .unsupported
      case .resourceTemporarilyUnavailable, .permissionDenied: return .conflict
      default: throw error
      }
    }
  }

  /// Whether another open file description holds a lock that would block a write lock on the
  /// byte at `offset` (`F_OFD_GETLK`); false when the file system cannot tell.
  static func byteIsLockedByOthers(_ fd: FileDescriptor, at offset: Int64) -> Bool {
    var fl = byteLock(F_WRLCK, at: offset)
    guard (try? retrying({ fcntl(fd.rawValue, clinux_f_ofd_getlk, &fl) })) != nil else { return false }
    return fl.l_type != Int16(F_UNLCK)
  }

  private static func byteLock(_ type: Int32, at offset: Int64) -> flock {
    var fl = flock()
    fl.l_type = Int16(type)
    fl.l_whence = Int16(SEEK_SET)
    fl.l_start = off_t(offset)
    fl.l_len = 1
    return fl
  }
}
