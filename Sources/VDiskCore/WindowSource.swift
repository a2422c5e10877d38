/// A read-only window `[offset, offset + length)` of another file: a disk inside an archive (an
/// OVA member) read in place, never extracted. The window has no descriptor of its own (the
/// parent's would splice, lock and seek holes at the wrong offsets), so reads are copied and
/// every byte counts as data; writes and resizes are refused with `.readOnly`.
public final class WindowSource: ByteSource {
  public let parent: ImageFile
  public let offset: UInt64
  public let length: UInt64
  public let identity = SourceIdentity.unique()

  /// `offset` and `length` must lie inside `parent` (checked: `.corrupt` naming the parent).
  public init(_ parent: ImageFile, offset: UInt64, length: UInt64) throws {
    guard offset <= parent.size, length <= parent.size - offset else {
      throw VDiskError.corrupt(
        parent.path, at: offset,
        "a member of \(length) bytes at offset \(offset) runs past the end of the file")
    }
    self.parent = parent
    self.offset = offset
    self.length = length
  }

  public func read(into buffer: UnsafeMutableRawBufferPointer, at position: UInt64) throws -> Int {
    guard position < length, buffer.count > 0 else { return 0 }
    let count = Int(min(UInt64(buffer.count), length - position))
    return try parent.read(
      into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]), at: offset + position)
  }

  public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
    throw VDiskError(.readOnly, path: parent.path, "a disk inside an archive cannot be written")
  }

  public func synchronize() throws {}

  public func size() throws -> UInt64 { length }

  public func setSize(_ size: UInt64) throws {
    throw VDiskError(.readOnly, path: parent.path, "a disk inside an archive cannot be resized")
  }

  public func status() throws -> FileStatus {
    var status = try parent.source.status()
    status.device = identity.device
    status.inode = identity.inode
    status.size = length
    status.allocatedBytes = (length + 511) / 512 * 512
    status.isBlockDevice = false
    return status
  }
}
