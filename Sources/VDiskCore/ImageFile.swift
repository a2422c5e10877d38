import Synchronization
import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// One open image file (or extent/data file): positional I/O only, never a shared file offset.
/// Reads retry on EINTR and continue after short reads; a read that meets end-of-file stops there
/// and says how much it got. Closed when the last reference goes.
public final class ImageFile: Sendable {
  /// The path the file was opened by (already resolved by the opener), used in every error.
  public let path: String
  public let descriptor: FileDescriptor
  public let isWritable: Bool
  /// Identity of the underlying file, for backing-chain cycle detection.
  public let device: UInt64
  public let inode: UInt64
  /// Unique for the life of the process; keys metadata caches shared by a whole chain.
  public let id: UInt64
  private let cachedSize: Atomic<UInt64>
  private static let nextID = Atomic<UInt64>(1)

  init(path: String, descriptor: FileDescriptor, isWritable: Bool) throws {
    self.path = path
    self.descriptor = descriptor
    self.isWritable = isWritable
    self.id = Self.nextID.wrappingAdd(1, ordering: .relaxed).oldValue
    var st = stat()
    guard fstat(descriptor.rawValue, &st) == 0 else {
      let e = Glibc.errno
      try? descriptor.close()
      throw VDiskError(.io, path: path, "cannot stat: \(Errno(rawValue: e))", errno: e)
    }
    device = UInt64(st.st_dev)
    inode = UInt64(st.st_ino)
    var size = UInt64(max(0, st.st_size))
    if (st.st_mode & S_IFMT) == S_IFBLK {
      // A block device reports size 0 in st_size; ask the device itself.
      let end = lseek(descriptor.rawValue, 0, SEEK_END)
      if end > 0 { size = UInt64(end) }
    }
    cachedSize = Atomic(size)
  }

  deinit { try? descriptor.close() }

  /// Opens `path` read-only (`writable: false`, always so for backing files) or read-write.
  public static func open(_ path: String, writable: Bool = false) throws -> ImageFile {
    let fd: FileDescriptor
    do {
      fd = try FileDescriptor.open(
        FilePath(path), writable ? .readWrite : .readOnly, options: [.closeOnExec], retryOnInterrupt: true)
    } catch let e as Errno {
      let kind: VDiskError.Kind =
        switch e {
        case .noSuchFileOrDirectory, .notDirectory: .notFound
        case .readOnlyFileSystem, .permissionDenied, .notPermitted: .readOnly
        default: .io
        }
      throw VDiskError(kind, path: path, "cannot open: \(e)", errno: e.rawValue)
    }
    return try ImageFile(path: path, descriptor: fd, isWritable: writable)
  }

  /// Size of the file in bytes as last seen (updated by writes that extend it).
  public var size: UInt64 { cachedSize.load(ordering: .relaxed) }

  /// Reads into `buffer` from `offset` until the buffer is full or end-of-file; returns the
  /// number of bytes read (less than `buffer.count` only at end-of-file).
  public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
    guard offset <= UInt64(Int64.max) else { return 0 }
    var done = 0
    while done < buffer.count {
      let position = offset + UInt64(done)
      guard position <= UInt64(Int64.max) else { break }
      let n: Int
      do {
        n = try descriptor.read(
          fromAbsoluteOffset: Int64(position), into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]),
          retryOnInterrupt: true)
      } catch let e as Errno {
        throw VDiskError(
          .io, path: path, offset: position,
          "read of \(buffer.count - done) bytes at \(hex(position)) failed: \(e)",
          errno: e.rawValue)
      }
      if n == 0 { break }
      done += n
    }
    return done
  }

  /// Reads exactly `buffer.count` bytes or throws `.corrupt`, naming `what` lies beyond end of file.
  public func readExactly(
    into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64, what: @autoclosure () -> String = "data"
  ) throws {
    let n = try read(into: buffer, at: offset)
    if n < buffer.count {
      throw VDiskError.corrupt(
        path, at: offset, "\(what()) at \(hex(offset)) lies beyond end of file (size \(hex(size)))")
    }
  }

  /// Reads and returns exactly `count` bytes at `offset` (see `readExactly`).
  public func readBytes(at offset: UInt64, count: Int, what: @autoclosure () -> String = "data") throws
    -> [UInt8]
  {
    try [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
      try readExactly(into: UnsafeMutableRawBufferPointer(buffer), at: offset, what: what())
      initialized = count
    }
  }

  /// Reads like `read`, and zero-fills whatever lies past end-of-file (QEMU's file driver does
  /// the same for data clusters that reach past the end of a truncated image).
  public func readFillingZeros(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
    let n = try read(into: buffer, at: offset)
    if n < buffer.count, let base = buffer.baseAddress {
      (base + n).initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count - n)
    }
  }

  /// Writes all of `buffer` at `offset`.
  public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
    guard isWritable else {
      throw VDiskError(.readOnly, path: path, offset: offset, "file is open read-only")
    }
    do {
      _ = try descriptor.writeAll(toAbsoluteOffset: Int64(offset), buffer)
    } catch let e as Errno {
      throw VDiskError(
        e == .noSpace ? .noSpace : .io, path: path, offset: offset,
        "write of \(buffer.count) bytes at \(hex(offset)) failed: \(e)", errno: e.rawValue)
    }
    noteWritten(upTo: offset + UInt64(buffer.count))
  }

  /// Raises the remembered size to `end` after a write that reached it.
  func noteWritten(upTo end: UInt64) {
    var current = cachedSize.load(ordering: .relaxed)
    while end > current {
      let (exchanged, original) = cachedSize.compareExchange(
        expected: current, desired: end, ordering: .relaxed)
      if exchanged { break }
      current = original
    }
  }

  /// Sets the file's size (ftruncate): grows it with a hole, or cuts it.
  public func setSize(_ newSize: UInt64) throws {
    guard isWritable else { throw VDiskError(.readOnly, path: path, "file is open read-only") }
    guard newSize <= UInt64(Int64.max) else {
      throw VDiskError(.invalidArgument, path: path, "size \(newSize) is too large")
    }
    while ftruncate(descriptor.rawValue, off_t(newSize)) != 0 {
      let e = Glibc.errno
      if e == EINTR { continue }
      throw VDiskError(
        e == ENOSPC || e == EFBIG ? .noSpace : .io, path: path,
        "cannot set the size to \(newSize): \(Errno(rawValue: e))", errno: e)
    }
    cachedSize.store(newSize, ordering: .relaxed)
  }

  /// Flushes file data (and the metadata needed to read it back) to stable storage.
  public func dataSync() throws {
    while fdatasync(descriptor.rawValue) != 0 {
      let e = Glibc.errno
      if e == EINTR { continue }
      throw VDiskError(.io, path: path, "fdatasync failed: \(Errno(rawValue: e))", errno: e)
    }
  }
}
