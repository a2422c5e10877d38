#if canImport(Glibc)
  import Glibc
#endif

/// QEMU's image locking (block/file-posix.c), so that vdiskfs and a running QEMU never write one
/// image at once: open-file-description byte-range read locks, byte 100 + n for each block
/// permission n held, byte 200 + n for each permission not shared with others. Measured on QEMU
/// 7.2: a writable image holds 100, 101, 103 and 201, 203; a read-only or backing image 100 and
/// 201, 203. Permission bits: 0 consistent read, 1 write, 2 write unchanged, 3 resize.
public enum ImageLock {
  static let permissionBase: Int64 = 100
  static let sharedBase: Int64 = 200
  static let names = ["consistent read", "write", "write unchanged", "resize"]

  /// Linux fcntl commands (not exported by the Swift Glibc module without _GNU_SOURCE).
  static let getLock: Int32 = 36  // F_OFD_GETLK
  static let setLock: Int32 = 37  // F_OFD_SETLK

  public struct Permissions: Sendable, Equatable {
    /// Bits held.
    public var held: UInt8
    /// Bits others may not hold.
    public var unshared: UInt8

    /// A writer: consistent read, write, resize; shares neither write nor resize.
    public static let writer = Permissions(held: 0b1011, unshared: 0b1010)
    /// A reader (read-only image, backing file): consistent read; shares neither write nor resize.
    public static let reader = Permissions(held: 0b0001, unshared: 0b1010)
  }

  /// Takes the locks for `permissions` on `file` and checks that no other process's locks
  /// conflict; throws `.locked` naming the permission, as QEMU's message does. File systems
  /// without OFD locks (EINVAL, EOPNOTSUPP, ENOLCK) are left unlocked, as QEMU does.
  public static func acquire(_ permissions: Permissions, on file: ImageFile) throws {
    let fd = file.descriptor.rawValue
    for bit in 0..<4 {
      if permissions.held & (1 << bit) != 0 {
        guard try lock(fd, at: permissionBase + Int64(bit), path: file.path) else { return }
      }
      if permissions.unshared & (1 << bit) != 0 {
        guard try lock(fd, at: sharedBase + Int64(bit), path: file.path) else { return }
      }
    }
    for bit in 0..<4 {
      if permissions.held & (1 << bit) != 0, try heldByOthers(fd, at: sharedBase + Int64(bit)) {
        throw conflict(file, "Failed to get \"\(names[bit])\" lock")
      }
      if permissions.unshared & (1 << bit) != 0, try heldByOthers(fd, at: permissionBase + Int64(bit)) {
        throw conflict(file, "Failed to get shared \"\(names[bit])\" lock")
      }
    }
  }

  private static func conflict(_ file: ImageFile, _ what: String) -> VDiskError {
    VDiskError(
      .locked, path: file.path,
      "\(what): another process (QEMU?) is using the image; mount it read-only with -o ro,force_share to look at it anyway"
    )
  }

  /// Takes a read lock on one byte; false when the file system does not do OFD locks.
  private static func lock(_ fd: Int32, at offset: Int64, path: String) throws -> Bool {
    var fl = flock()
    fl.l_type = Int16(F_RDLCK)
    fl.l_whence = Int16(SEEK_SET)
    fl.l_start = off_t(offset)
    fl.l_len = 1
    if fcntl(fd, setLock, &fl) == 0 { return true }
    let e = errno
    if e == EINVAL || e == EOPNOTSUPP || e == ENOLCK { return false }
    if e == EAGAIN || e == EACCES {
      throw VDiskError(.locked, path: path, "byte \(offset) is locked by another process")
    }
    throw VDiskError(.io, path: path, "cannot lock byte \(offset): errno \(e)", errno: e)
  }

  /// Whether another open file description holds a lock on the byte (tested as QEMU does, with a
  /// write-lock probe).
  private static func heldByOthers(_ fd: Int32, at offset: Int64) throws -> Bool {
    var fl = flock()
    fl.l_type = Int16(F_WRLCK)
    fl.l_whence = Int16(SEEK_SET)
    fl.l_start = off_t(offset)
    fl.l_len = 1
    guard fcntl(fd, getLock, &fl) == 0 else { return false }
    return fl.l_type != Int16(F_UNLCK)
  }
}
