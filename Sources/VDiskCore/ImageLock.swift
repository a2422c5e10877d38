import SystemPackage

/// QEMU's image locking (block/file-posix.c), so that vdiskfs and a running QEMU never write one
/// image at once: open-file-description byte-range read locks, byte 100 + n for each block
/// permission n held, byte 200 + n for each permission not shared with others. Measured on QEMU
/// 7.2: a writable image holds 100, 101, 103 and 201, 203; a read-only or backing image 100 and
/// 201, 203. Permission bits: 0 consistent read, 1 write, 2 write unchanged, 3 resize.
public enum ImageLock {
  static let permissionBase: Int64 = 100
  static let sharedBase: Int64 = 200
  static let names = ["consistent read", "write", "write unchanged", "resize"]

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
  /// without OFD locks (EINVAL, EOPNOTSUPP, ENOLCK) are left unlocked, as QEMU does; so are
  /// sources without a descriptor (memory), which no other process can open.
  public static func acquire(_ permissions: Permissions, on file: ImageFile) throws {
    guard let fd = file.descriptor else { return }
    for bit in 0..<4 {
      if permissions.held & (1 << bit) != 0 {
        guard try lock(fd, at: permissionBase + Int64(bit), path: file.path) else { return }
      }
      if permissions.unshared & (1 << bit) != 0 {
        guard try lock(fd, at: sharedBase + Int64(bit), path: file.path) else { return }
      }
    }
    for bit in 0..<4 {
      if permissions.held & (1 << bit) != 0, Syscalls.byteIsLockedByOthers(fd, at: sharedBase + Int64(bit)) {
        throw conflict(file, "Failed to get \"\(names[bit])\" lock")
      }
      if permissions.unshared & (1 << bit) != 0,
        Syscalls.byteIsLockedByOthers(fd, at: permissionBase + Int64(bit))
      {
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
  private static func lock(_ fd: FileDescriptor, at offset: Int64, path: String) throws -> Bool {
    do {
      switch try Syscalls.readLockByte(fd, at: offset) {
      case .taken: return true
      case .unsupported: return false
      case .conflict: throw VDiskError(.locked, path: path, "byte \(offset) is locked by another process")
      }
    } catch let e as Errno {
      throw VDiskError(.io, path: path, "cannot lock byte \(offset): \(e)", errno: e.rawValue)
    }
  }
}
