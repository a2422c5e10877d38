/// What an open file handle (`fuse_file_info.fh`) refers to: the view resolved once at open, so
/// reads and writes skip the inode lookup. A view stays readable through its handle after its
/// entry left the tree (a deleted snapshot), as an unlinked file does.
final class OpenFile: Sendable {
  let view: DiskView
  /// Opened with direct I/O (`FOPEN_DIRECT_IO`, on a writable view with
  /// `FOPEN_PARALLEL_DIRECT_WRITES`): the kernel neither caches nor serializes its I/O, and keeps
  /// no page of its inode right after its writes.
  let direct: Bool
  /// Counted among the inode's page-cache opens (`PageCacheRegistry.opened`): its inode.
  let cachedInode: UInt64?

  init(_ view: DiskView, direct: Bool, cachedInode: UInt64?) {
    self.view = view
    self.direct = direct
    self.cachedInode = cachedInode
  }

  /// The handle as stored in `fh` (+1 retained; balanced by `release(handle:)`).
  static func handle(for view: DiskView, direct: Bool, cachedInode: UInt64?) -> UInt64 {
    let file = OpenFile(view, direct: direct, cachedInode: cachedInode)
    return UInt64(UInt(bitPattern: Unmanaged.passRetained(file).toOpaque()))
  }

  /// The open file behind `handle`, or nil for 0 (a file opened before handles existed).
  @inline(__always)
  static func from(handle: UInt64) -> OpenFile? {
    guard let pointer = UnsafeRawPointer(bitPattern: UInt(handle)) else { return nil }
    return Unmanaged<OpenFile>.fromOpaque(pointer).takeUnretainedValue()
  }

  /// Drops the handle's reference (and its count among the inode's page-cache opens).
  static func release(handle: UInt64, pageCache: PageCacheRegistry) {
    guard let pointer = UnsafeRawPointer(bitPattern: UInt(handle)) else { return }
    let file = Unmanaged<OpenFile>.fromOpaque(pointer)
    if let inode = file.takeUnretainedValue().cachedInode { pageCache.closed(inode) }
    file.release()
  }
}
