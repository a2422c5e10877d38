import SystemPackage

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

  /// Opens `path` read-only or read-write, close-on-exec.
  public static func open(_ path: String, writable: Bool) throws(Errno) -> FileDescriptorSource {
    let fd: FileDescriptor
    do {
      fd = try FileDescriptor.open(
        FilePath(path), writable ? .readWrite : .readOnly, options: [.closeOnExec], retryOnInterrupt: true)
    } catch let e as Errno {
      throw e
    } catch {
      throw Errno.ioError
    }
    return try FileDescriptorSource(descriptor: fd)
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
