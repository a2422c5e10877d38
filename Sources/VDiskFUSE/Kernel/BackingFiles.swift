import CFuse
import Logging
import Synchronization

/// The kernel backing ids of passed-through views (FUSE passthrough, protocol 7.40).
///
/// One id per inode, registered (`FUSE_DEV_IOC_BACKING_OPEN`) at the first open of a view that
/// qualifies (`DiskView.passthrough`) and kept for the mount's life: the kernel refuses to open
/// one inode with two different backing files at once, and refuses (EIO) an open without
/// FOPEN_PASSTHROUGH of an inode that is open with it — so every open of an inode must get the
/// same answer, and a failed registration makes that inode take the normal path for good. The
/// ids are closed (`FUSE_DEV_IOC_BACKING_CLOSE`) when the session ends; the kernel would drop
/// them with the connection anyway, and files still open keep their backing file.
final class BackingFiles: Sendable {
  /// FUSE_PASSTHROUGH was negotiated at INIT.
  private let negotiated = Atomic<Bool>(false)
  /// Inode -> backing id (> 0), or 0: that inode takes the normal path.
  private let ids = Mutex<[UInt64: Int32]>([:])

  func enable() { negotiated.store(true, ordering: .releasing) }

  var enabled: Bool { negotiated.load(ordering: .acquiring) }

  /// The backing id to open `inode` (showing `view`) with, registering it on `device` the first
  /// time; nil for the normal path (not negotiated, the view does not qualify, or the kernel
  /// refused it: one debug line then).
  func backingID(for inode: UInt64, view: DiskView, device: Int32, logger: Logger) -> Int32? {
    guard let file = view.passthrough, enabled else { return nil }
    return ids.withLock { ids -> Int32? in
      if let known = ids[inode] { return known > 0 ? known : nil }
      var id: Int32 = 0
      if let fd = file.descriptor?.rawValue {
        id = cfuse_backing_open(device, fd)
      }
      if id > 0 {
        logger.debug("passthrough: \(file.path) is backing id \(id) for inode \(inode)")
      } else {
        logger.debug(
          "passthrough: not for \(file.path) (\(id < 0 ? "errno \(-id)" : "no descriptor")); normal path")
      }
      ids[inode] = max(id, 0)
      return id > 0 ? id : nil
    }
  }

  /// Whether `inode` is opened with a backing file (for the tests and the log).
  func isPassedThrough(_ inode: UInt64) -> Bool { ids.withLock { ($0[inode] ?? 0) > 0 } }

  /// Closes every registered id on `device` (errors ignored: the connection may be gone).
  func closeAll(device: Int32) {
    let registered = ids.withLock { ids in
      defer { ids.removeAll() }
      return ids.values.filter { $0 > 0 }
    }
    for id in registered { _ = cfuse_backing_close(device, id) }
  }
}
