import Synchronization
import SystemPackage

/// Where an `ImageFile`'s bytes come from: a file descriptor today (`FileDescriptorSource`),
/// bytes in memory for tests and fuzzing (`MemorySource`), a fault injector in tests, and later
/// perhaps a remote object or an RBD image. `ImageFile` adds the path, error context, read-only
/// enforcement and the size cache on top; a source only moves bytes.
///
/// Errors: a source throws `Errno` for what the kernel would report (ENOSPC, EDQUOT and EFBIG
/// become `.noSpace`, anything else `.io`); a `VDiskError` passes through `ImageFile` unchanged;
/// any other error is reported as `.io`. Every method may be called from many threads at once.
public protocol ByteSource: AnyObject, Sendable {
  /// Identity of the underlying object, for backing-chain cycle detection.
  var identity: SourceIdentity { get }

  /// The descriptor behind the source, if any: used for splice, QEMU-compatible OFD locks and
  /// SEEK_DATA/SEEK_HOLE. Sources without one simply go without (copied replies, no locks,
  /// every byte counted as data).
  var fileDescriptor: FileDescriptor? { get }

  /// Reads into `buffer` from `offset` until it is full or the source ends; returns the number
  /// of bytes read, short only at the end.
  func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int

  /// Writes all of `buffer` at `offset`, extending the source if needed.
  func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws

  /// Writes `buffers` one after another from `offset`, as one operation where the source can
  /// (one `pwritev` for a file): copy-on-write fill and guest data of one host run go out
  /// together.
  func write(gathering buffers: [UnsafeRawBufferPointer], at offset: UInt64) throws

  /// Makes everything written so far durable (`fdatasync`).
  func synchronize() throws

  /// The current size in bytes.
  func size() throws -> UInt64

  /// Grows (with zeros / a hole) or cuts the source to `size` bytes.
  func setSize(_ size: UInt64) throws

  /// Makes the source at least `end` bytes long and `[offset, end)` read as zeros, never cutting
  /// it. The caller owns `[offset, end)` and saw it past the end of the source (so it holds no
  /// old bytes); a concurrent write elsewhere may already have extended the source further.
  func extendWithZeros(from offset: UInt64, to end: UInt64) throws

  /// Size, allocation, owner and times, as `fstat` gives them.
  func status() throws -> FileStatus

  /// Whether the bytes at `offset` are stored or a hole, and how far that holds; nil when the
  /// source cannot tell (then every byte counts as data).
  func allocation(at offset: UInt64) -> HostAllocation?
}

extension ByteSource {
  public var fileDescriptor: FileDescriptor? { nil }

  /// Gathers the buffers into one and writes it (for sources without a vectored write).
  public func write(gathering buffers: [UnsafeRawBufferPointer], at offset: UInt64) throws {
    if buffers.count == 1 { return try write(buffers[0], at: offset) }
    var joined = [UInt8]()
    joined.reserveCapacity(buffers.reduce(0) { $0 + $1.count })
    for b in buffers { joined.append(contentsOf: b) }
    try joined.withUnsafeBytes { try write($0, at: offset) }
  }

  public func allocation(at offset: UInt64) -> HostAllocation? { nil }

  /// Writes one zero byte at `end - 1` (the range is the caller's and reads as zeros already).
  public func extendWithZeros(from offset: UInt64, to end: UInt64) throws {
    guard end > offset else { return }
    try [UInt8(0)].withUnsafeBytes { try write($0, at: end - 1) }
  }
}

/// What identifies the object under a source: device and inode for files; sources that are not
/// files use `SourceIdentity.unique()`.
public struct SourceIdentity: Hashable, Sendable {
  public var device: UInt64
  public var inode: UInt64

  public init(device: UInt64, inode: UInt64) {
    self.device = device
    self.inode = inode
  }

  private static let nextUnique = Atomic<UInt64>(1)

  /// An identity no file and no other call has: device `UInt64.max` (no real device number),
  /// inode from a process-wide counter.
  public static func unique() -> SourceIdentity {
    SourceIdentity(device: .max, inode: nextUnique.wrappingAdd(1, ordering: .relaxed).oldValue)
  }
}

/// A run of a source as its storage says: stored data, or a hole (reads as zeros), up to `end`
/// (exclusive; `UInt64.max` when the rest of the source is a hole).
public enum HostAllocation: Sendable, Equatable {
  case data(end: UInt64)
  case hole(end: UInt64)
}

/// What `fstat` says about a source (sources that are not files make up what they can).
public struct FileStatus: Sendable, Equatable {
  public var device: UInt64
  public var inode: UInt64
  /// `st_size`: 0 for a block device.
  public var size: UInt64
  /// Bytes the file occupies on disk (`st_blocks * 512`).
  public var allocatedBytes: UInt64
  public var userID: UInt32
  public var groupID: UInt32
  public var modificationSeconds: Int
  public var modificationNanoseconds: Int
  public var isBlockDevice: Bool

  public init(
    device: UInt64, inode: UInt64, size: UInt64, allocatedBytes: UInt64, userID: UInt32 = 0,
    groupID: UInt32 = 0, modificationSeconds: Int = 0, modificationNanoseconds: Int = 0,
    isBlockDevice: Bool = false
  ) {
    self.device = device
    self.inode = inode
    self.size = size
    self.allocatedBytes = allocatedBytes
    self.userID = userID
    self.groupID = groupID
    self.modificationSeconds = modificationSeconds
    self.modificationNanoseconds = modificationNanoseconds
    self.isBlockDevice = isBlockDevice
  }
}
