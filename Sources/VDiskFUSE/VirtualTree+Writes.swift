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

  /// `fallocate` on file `inode`: PUNCH_HOLE (with KEEP_SIZE, as the kernel requires) and
  /// ZERO_RANGE make the range read as zeros; mode 0 within the file succeeds without doing
  /// anything (the disk's size is fixed; there is nothing to reserve that a write could not
  /// allocate); anything else (COLLAPSE, INSERT, growing the file) is EOPNOTSUPP.
  public func fallocate(_ inode: UInt64, mode: Int32, offset: UInt64, length: UInt64) throws {
    let view = try checkWritable(inode)
    let keepSize: Int32 = 0x01
    let punchHole: Int32 = 0x02
    let zeroRange: Int32 = 0x10
    let size = view.content.size
    let (end, overflow) = offset.addingReportingOverflow(length)
    guard !overflow else { throw FileSystemError(EINVAL) }
    switch mode & ~keepSize {
    case punchHole where mode & keepSize != 0:
      defer { modified(view, offset..<end) }
      try view.content.discard(at: offset, length: length, mode: .punchHole)
    case zeroRange:
      guard end <= size || mode & keepSize != 0 else { throw FileSystemError(EOPNOTSUPP) }
      defer { modified(view, offset..<end) }
      try view.content.discard(at: offset, length: length, mode: .zeroRange)
    case 0:
      guard end <= size || mode & keepSize != 0 else { throw FileSystemError(EOPNOTSUPP) }
    default:
      throw FileSystemError(EOPNOTSUPP)
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
