/// What an open file handle (`fuse_file_info.fh`) refers to: the view resolved once at open, so
/// reads and writes skip the inode lookup. A view stays readable through its handle after its
/// entry left the tree (a deleted snapshot), as an unlinked file does.
final class OpenFile: Sendable {
  let view: DiskView
  /// Opened with O_DIRECT: answered with `FOPEN_DIRECT_IO` (and on a writable view
  /// `FOPEN_PARALLEL_DIRECT_WRITES`), so the kernel neither caches nor serializes its I/O.
  let direct: Bool

  init(_ view: DiskView, direct: Bool) {
    self.view = view
    self.direct = direct
  }

  /// The handle as stored in `fh` (+1 retained; balanced by `release(handle:)`).
  static func handle(for view: DiskView, direct: Bool) -> UInt64 {
    UInt64(UInt(bitPattern: Unmanaged.passRetained(OpenFile(view, direct: direct)).toOpaque()))
  }

  /// The open file behind `handle`, or nil for 0 (a file opened before handles existed).
  @inline(__always)
  static func from(handle: UInt64) -> OpenFile? {
    guard let pointer = UnsafeRawPointer(bitPattern: UInt(handle)) else { return nil }
    return Unmanaged<OpenFile>.fromOpaque(pointer).takeUnretainedValue()
  }

  /// Drops the handle's reference (and its count among the view's cached opens).
  static func release(handle: UInt64) {
    guard let pointer = UnsafeRawPointer(bitPattern: UInt(handle)) else { return }
    let file = Unmanaged<OpenFile>.fromOpaque(pointer)
    if !file.takeUnretainedValue().direct { file.takeUnretainedValue().view.cachedOpens.closed() }
    file.release()
  }
}
