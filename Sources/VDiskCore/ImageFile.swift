import Synchronization
import SystemPackage

/// One open image file (or extent/data file): positional I/O only, never a shared file offset.
/// Its bytes come from a `ByteSource` (a file descriptor unless a test or another backend says
/// otherwise); this class names the file in every error, refuses writes to read-only files and
/// caches the size. Reads continue after short reads; a read that meets the end stops there and
/// says how much it got.
public final class ImageFile: Sendable {
  /// The path the file was opened by (already resolved by the opener), used in every error.
  public let path: String
  public let source: any ByteSource
  /// The source's descriptor, nil for sources without one (no splice, locks or SEEK_DATA then).
  public let descriptor: FileDescriptor?
  public let isWritable: Bool
  /// Identity of the underlying file, for backing-chain cycle detection.
  public let device: UInt64
  public let inode: UInt64
  /// Unique for the life of the process; keys metadata caches shared by a whole chain.
  public let id: UInt64
  private let cachedSize: Atomic<UInt64>
  /// Set when a sync failed: see `dataSync`.
  private let syncFailed = Atomic<Bool>(false)
  private static let nextID = Atomic<UInt64>(1)

  /// An image file over `source`, named `path` in errors; writes are refused unless `isWritable`.
  public init(source: any ByteSource, path: String, isWritable: Bool) throws {
    self.path = path
    self.source = source
    self.descriptor = source.fileDescriptor
    self.isWritable = isWritable
    self.id = Self.nextID.wrappingAdd(1, ordering: .relaxed).oldValue
    let identity = source.identity
    device = identity.device
    inode = identity.inode
    let size: UInt64
    do {
      size = try source.size()
    } catch {
      throw Self.failure(error, path: path, offset: nil, "cannot stat")
    }
    cachedSize = Atomic(size)
  }

  /// Opens `path` read-only (`writable: false`, always so for backing files) or read-write.
  /// Only a regular file or a block device opens: the type is checked before the open (a FIFO
  /// would block it) and again on the descriptor, which is opened non-blocking, so that a FIFO
  /// put in its place between the two cannot hang either (`.unsupported`).
  public static func open(_ path: String, writable: Bool = false) throws -> ImageFile {
    let source: FileDescriptorSource
    do {
      try checkType(try FileDescriptorSource.fileType(atPath: path), path: path)
      source = try FileDescriptorSource.open(path, writable: writable)
    } catch let error as Errno {
      let kind: VDiskError.Kind =
        switch error {
        case .noSuchFileOrDirectory, .notDirectory: .notFound
        case .readOnlyFileSystem, .permissionDenied, .notPermitted: .readOnly
        default: .io
        }
      throw VDiskError(kind, path: path, "cannot open: \(error)", errno: error.rawValue)
    }
    try checkType(source.fileType, path: path)
    return try ImageFile(source: source, path: path, isWritable: writable)
  }

  private static func checkType(_ type: FileType, path: String) throws {
    guard type.canHoldImage else {
      throw VDiskError.unsupported(
        path,
        "is \(type.rawValue); an image, backing file or extent file must be a regular file or a block device")
    }
  }

  /// Size of the file in bytes as last seen (updated by writes that extend it).
  public var size: UInt64 { cachedSize.load(ordering: .relaxed) }

  /// Reads into `buffer` from `offset` until the buffer is full or end-of-file; returns the
  /// number of bytes read (less than `buffer.count` only at end-of-file).
  public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
    guard offset <= UInt64(Int64.max) else { return 0 }
    do {
      return try source.read(into: buffer, at: offset)
    } catch {
      throw Self.failure(
        error, path: path, offset: offset, "read of \(buffer.count) bytes at \(hex(offset)) failed")
    }
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
    try checkWritable(at: offset)
    do {
      try source.write(buffer, at: offset)
    } catch {
      throw Self.failure(
        error, path: path, offset: offset, "write of \(buffer.count) bytes at \(hex(offset)) failed")
    }
    grow(to: offset + UInt64(buffer.count))
  }

  /// Writes `buffers` back to back from `offset` in one operation where the source can (one
  /// `pwritev` for a file): a host-contiguous run of fill and guest data in one system call.
  public func write(gathering buffers: [UnsafeRawBufferPointer], at offset: UInt64) throws {
    try checkWritable(at: offset)
    let total = buffers.reduce(0) { $0 + $1.count }
    do {
      try source.write(gathering: buffers, at: offset)
    } catch {
      throw Self.failure(
        error, path: path, offset: offset,
        "write of \(total) bytes (\(buffers.count) buffers) at \(hex(offset)) failed")
    }
    grow(to: offset + UInt64(total))
  }

  /// Makes the file at least `end` bytes long with `[offset, end)` reading as zeros, never cutting
  /// it (`ByteSource.extendWithZeros`): for a new unit whose unwritten part lies past the end of
  /// the file, instead of writing zeros there.
  public func extendWithZeros(from offset: UInt64, to end: UInt64) throws {
    try checkWritable(at: offset)
    guard end > offset else { return }
    do {
      try source.extendWithZeros(from: offset, to: end)
    } catch {
      throw Self.failure(
        error, path: path, offset: offset, "extending to \(hex(end)) from \(hex(offset)) failed")
    }
    grow(to: end)
  }

  /// Sets the file's size (ftruncate): grows it with a hole, or cuts it.
  public func setSize(_ newSize: UInt64) throws {
    guard isWritable else { throw VDiskError(.readOnly, path: path, "file is open read-only") }
    guard newSize <= UInt64(Int64.max) else {
      throw VDiskError(.invalidArgument, path: path, "size \(newSize) is too large")
    }
    do {
      try source.setSize(newSize)
    } catch {
      throw Self.failure(error, path: path, offset: nil, "cannot set the size to \(newSize)")
    }
    cachedSize.store(newSize, ordering: .relaxed)
  }

  /// Flushes file data (and the metadata needed to read it back) to stable storage.
  ///
  /// Once a sync has failed, every later one fails too (EIO): after a failed fdatasync, Linux
  /// may have dropped the dirty pages it could not write and reports the error only once, so a
  /// later sync that succeeds would vouch for data that may be gone (QEMU's file driver refuses
  /// every later flush the same way). Reads and writes go on; only reopening the file clears it.
  public func dataSync() throws {
    try checkSyncs()
    do {
      try source.synchronize()
    } catch {
      syncFailed.store(true, ordering: .releasing)
      throw Self.failure(error, path: path, offset: nil, "fdatasync failed")
    }
  }

  /// Throws (EIO) when a sync of this file has failed since it was opened (`dataSync`): for a
  /// flush that had nothing left to sync, which must not report success either.
  public func checkSyncs() throws {
    if syncFailed.load(ordering: .acquiring) {
      throw VDiskError(
        .io, path: path,
        "an earlier fdatasync failed, so data written before it may be lost; refusing to report later syncs as durable (reopen the image)",
        errno: Errno.ioError.rawValue)
    }
  }

  /// Size, allocation, owner and times of the file now (`fstat`); nil when the source cannot
  /// say.
  public func status() -> FileStatus? { try? source.status() }

  /// Whether the host bytes at `offset` are stored or a hole (SEEK_DATA/SEEK_HOLE) and how far;
  /// nil when the source cannot tell, in which case every byte counts as data.
  public func allocation(at offset: UInt64) -> HostAllocation? {
    guard offset <= UInt64(Int64.max) else { return nil }
    return source.allocation(at: offset)
  }

  private func checkWritable(at offset: UInt64) throws {
    guard isWritable else {
      throw VDiskError(.readOnly, path: path, offset: offset, "file is open read-only")
    }
  }

  /// Raises the cached size to `observed` (the file's size as its owner just saw it), if that is
  /// larger: writes that reached the file without this process (FUSE passthrough, where the
  /// kernel writes the file itself) can only have grown it.
  public func noteExternalGrowth(to observed: UInt64) { grow(to: observed) }

  /// Raises the cached size to `end` (writes that extend the file).
  private func grow(to end: UInt64) {
    var current = cachedSize.load(ordering: .relaxed)
    while end > current {
      let (exchanged, original) = cachedSize.compareExchange(
        expected: current, desired: end, ordering: .relaxed)
      if exchanged { break }
      current = original
    }
  }

  /// A source's failure as a `VDiskError` naming this file: `Errno` by kind (ENOSPC, EDQUOT and
  /// EFBIG are `.noSpace`), a `VDiskError` unchanged, anything else `.io`.
  private static func failure(_ error: any Error, path: String, offset: UInt64?, _ what: String) -> VDiskError
  {
    switch error {
    case let e as VDiskError:
      return e
    case let e as Errno:
      let kind: VDiskError.Kind =
        switch e {
        case .noSpace, .diskQuotaExceeded, .fileTooLarge: .noSpace
        default: .io
        }
      return VDiskError(kind, path: path, offset: offset, "\(what): \(e)", errno: e.rawValue)
    default:
      return VDiskError(.io, path: path, offset: offset, "\(what): \(error)")
    }
  }
}
