import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// Writing, zeroing, syncing and resizing files of the tree.
extension VirtualTree {
  /// Writes `data` to file `inode` at `offset`; past the end, ENOSPC. Returns the bytes written.
  public func write(_ inode: UInt64, _ data: UnsafeRawBufferPointer, at offset: UInt64) throws -> Int {
    try write(view: checkWritable(inode), data, at: offset)
  }

  /// Writes `data` to `view` (an open file's view) at `offset`, as `write(_:_:at:)`.
  public func write(view: DiskView, _ data: UnsafeRawBufferPointer, at offset: UInt64) throws -> Int {
    guard view.writable else { throw FileSystemError(EROFS) }
    defer { modified(view, offset..<offset + UInt64(data.count)) }
    return try view.content.write(data, at: offset)
  }

  /// What a `fallocate(2)` asks for, decoded from its mode bits by the FUSE handler.
  public enum AllocateRequest: Sendable, Equatable {
    /// `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE` (the kernel allows no hole without KEEP_SIZE).
    case punchHole
    /// `FALLOC_FL_ZERO_RANGE`, with or without `FALLOC_FL_KEEP_SIZE`.
    case zeroRange(keepSize: Bool)
    /// Mode 0 (or just `FALLOC_FL_KEEP_SIZE`): reserve space.
    case reserve(keepSize: Bool)
  }

  /// `fallocate` on file `inode`: a punched hole and a zeroed range read as zeros; reserving
  /// within the file succeeds without doing anything (the disk's size is fixed; there is nothing
  /// to reserve that a write could not allocate); growing the file is EOPNOTSUPP (as are the
  /// modes the handler cannot decode: COLLAPSE, INSERT, …).
  public func fallocate(_ inode: UInt64, _ request: AllocateRequest, offset: UInt64, length: UInt64) throws {
    let view = try checkWritable(inode)
    let size = view.content.size
    let (end, overflow) = offset.addingReportingOverflow(length)
    guard !overflow else { throw FileSystemError(EINVAL) }
    switch request {
    case .punchHole:
      defer { modified(view, offset..<end) }
      try view.content.discard(at: offset, length: length, mode: .punchHole)
    case .zeroRange(let keepSize):
      guard end <= size || keepSize else { throw FileSystemError(EOPNOTSUPP) }
      defer { modified(view, offset..<end) }
      try view.content.discard(at: offset, length: length, mode: .zeroRange)
    case .reserve(let keepSize):
      guard end <= size || keepSize else { throw FileSystemError(EOPNOTSUPP) }
    }
  }

  /// `fsync`, `fdatasync`, `flush` (close) on file `inode`: metadata written back in order and the
  /// image synced. Nothing to do for a read-only view.
  public func sync(_ inode: UInt64) throws {
    let view = try fileView(inode)
    guard view.writable else { return }
    try view.content.flush()
  }

  /// `truncate` of file `inode` to `size`: grows the virtual disk; shrinking only with
  /// `allowShrink` (EINVAL otherwise); partitions cannot be resized (EINVAL).
  public func resize(_ inode: UInt64, to size: UInt64) throws {
    let view = try checkWritable(inode)
    let old = view.content.size
    guard size != old else { return }
    guard size > old || view.allowShrink else { throw FileSystemError(EINVAL) }
    defer { modified(view, min(old, size)..<max(old, size)) }
    try view.content.resize(to: size, allowShrink: view.allowShrink)
  }

  /// Writes back every writable view (unmount, SIGTERM).
  public func syncAll() throws {
    for view in views where view.writable { try view.content.flush() }
  }

  /// A view changed: every view's st_blocks is recomputed (views share storage), and the source
  /// hears of it (partition tables may have changed). Cheap: it runs after every write.
  func modified(_ view: DiskView, _ range: Range<UInt64>) {
    writeGeneration.add(1, ordering: .releasing)
    source.didModify(view, range: range)
  }
}
