import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// A file (or block device) read and written with positional system calls on one descriptor,
/// never through a shared file offset. Owns the descriptor and closes it when the last
/// reference goes.
public final class FileDescriptorSource: ByteSource {
  public let descriptor: FileDescriptor
  public let identity: SourceIdentity
  private let isBlockDevice: Bool

  /// Takes ownership of `descriptor` (closed on failure too).
  public init(descriptor: FileDescriptor) throws(Errno) {
    let status: FileStatus
    do {
      status = try Syscalls.fileStatus(descriptor)
    } catch {
      try? descriptor.close()
      throw error
    }
    self.descriptor = descriptor
    self.identity = SourceIdentity(device: status.device, inode: status.inode)
    self.isBlockDevice = status.isBlockDevice
  }

  deinit { try? descriptor.close() }

  /// Opens `path` read-only or read-write, close-on-exec, and non-blocking so that a FIFO (which
  /// would wait for a writer) cannot hang the open. `O_NONBLOCK` is cleared again on a regular
  /// file or block device; anything else keeps it, and the caller refuses it by `fileType`.
  public static func open(_ path: String, writable: Bool) throws(Errno) -> FileDescriptorSource {
    let fd: FileDescriptor
    do {
      fd = try FileDescriptor.open(
        FilePath(path), writable ? .readWrite : .readOnly, options: [.closeOnExec, .nonBlocking],
        retryOnInterrupt: true)
    } catch let e as Errno {
      throw e
    } catch {
      throw Errno.ioError
    }
    let source = try FileDescriptorSource(descriptor: fd)
    if source.fileType.canHoldImage { try Syscalls.clearNonBlocking(fd) }
    return source
  }

  /// What the descriptor is open on (`fstat`); `.unknown` when fstat fails.
  public var fileType: FileType { (try? Syscalls.fileType(descriptor)) ?? .unknown }

  /// The type of what `path` names (`stat`, following symbolic links), without opening it.
  public static func fileType(atPath path: String) throws(Errno) -> FileType {
    try Syscalls.fileType(atPath: path)
  }

  public var fileDescriptor: FileDescriptor? { descriptor }

  public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
    var done = 0
    while done < buffer.count {
      let position = offset + UInt64(done)
      guard position <= UInt64(Int64.max) else { break }
      let n = try descriptor.read(
        fromAbsoluteOffset: Int64(position), into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]),
        retryOnInterrupt: true)
      if n == 0 { break }
      done += n
    }
    return done
  }

  public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
    guard offset <= UInt64(Int64.max) else { throw Errno.fileTooLarge }
    _ = try descriptor.writeAll(toAbsoluteOffset: Int64(offset), buffer)
  }

  public func write(gathering buffers: [UnsafeRawBufferPointer], at offset: UInt64) throws {
    try Syscalls.writeAll(descriptor, buffers, at: offset)
  }

  public func synchronize() throws { try Syscalls.dataSync(descriptor) }

  /// `st_size`, or for a block device (whose `st_size` is 0) the device's end.
  public func size() throws -> UInt64 {
    if isBlockDevice { return try Syscalls.endOffset(descriptor) }
    return try Syscalls.fileStatus(descriptor).size
  }

  public func setSize(_ size: UInt64) throws { try Syscalls.truncate(descriptor, to: size) }

  public func status() throws -> FileStatus { try Syscalls.fileStatus(descriptor) }

  /// `fallocate` over the range (QEMU zeroes a new cluster's copy-on-write regions the same
  /// way); where the file system cannot, one zero byte written at the end.
  public func extendWithZeros(from offset: UInt64, to end: UInt64) throws {
    guard end > offset else { return }
    do {
      try Syscalls.allocate(descriptor, at: offset, length: end - offset)
      return
    } catch {
      guard error == .notSupported || error == .invalidArgument || error == .noFunction else { throw error }
    }
    let zero: [UInt8] = [0]
    try zero.withUnsafeBytes { try write($0, at: end - 1) }
  }

  /// SEEK_DATA, then SEEK_HOLE. nil when the file system cannot say (EINVAL on one without
  /// support): counting the bytes as data is always correct.
  public func allocation(at offset: UInt64) -> HostAllocation? {
    let dataStart: UInt64?
    do { dataStart = try Syscalls.nextData(descriptor, from: offset) } catch { return nil }
    // ENXIO: no data at or after `offset`, the rest is a hole.
    guard let dataStart else { return .hole(end: .max) }
    if dataStart > offset { return .hole(end: dataStart) }
    let holeStart: UInt64?
    do { holeStart = try Syscalls.nextHole(descriptor, from: offset) } catch { return nil }
    guard let holeStart, holeStart > offset else { return nil }
    return .data(end: holeStart)
  }
}

/// The type of a file (`st_mode & S_IFMT`). An image, backing file or extent file must be a
/// regular file or a block device: a FIFO, socket or character device would block or stream, and
/// a directory has no bytes.
public enum FileType: String, Sendable, Equatable {
  case regular = "a regular file"
  case blockDevice = "a block device"
  case characterDevice = "a character device"
  case directory = "a directory"
  case fifo = "a FIFO"
  case socket = "a socket"
  case symbolicLink = "a symbolic link"
  case unknown = "of unknown type"

  init(mode: mode_t) {
    switch mode & S_IFMT {
    case S_IFREG: self = .regular
    case S_IFBLK: self = .blockDevice
    case S_IFCHR: self = .characterDevice
    case S_IFDIR: self = .directory
    case S_IFIFO: self = .fifo
    case S_IFSOCK: self = .socket
    case S_IFLNK: self = .symbolicLink
    default: self = .unknown
    }
  }

  /// Whether an image may live in a file of this type.
  public var canHoldImage: Bool { self == .regular || self == .blockDevice }
}
