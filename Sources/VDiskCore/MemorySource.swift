import Synchronization
import SystemPackage

#if canImport(Glibc)
  import Glibc
#endif

/// Bytes in memory as a source: for tests (images built in code, no file system) and fuzzing.
/// Grows on writes past its end (the gap reads as zeros) up to `limit` bytes, beyond which writes
/// and size changes fail with EFBIG, so that a hostile image cannot make it allocate without
/// bound. Sync does nothing; there is no descriptor, hence no locks, splice or holes.
public final class MemorySource: ByteSource {
  public let identity = SourceIdentity.unique()
  public let limit: UInt64
  private let storage: Mutex<[UInt8]>

  public init(_ bytes: [UInt8] = [], limit: UInt64 = 1 << 30) {
    self.limit = limit
    storage = Mutex(bytes)
  }

  /// A copy of the current bytes.
  public var bytes: [UInt8] { storage.withLock { $0 } }

  public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
    storage.withLock { bytes in
      guard offset < UInt64(bytes.count) else { return 0 }
      let n = min(buffer.count, bytes.count - Int(offset))
      bytes.withUnsafeBytes { source in
        buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[Int(offset)..<Int(offset) + n]))
      }
      return n
    }
  }

  public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
    let (end, overflow) = offset.addingReportingOverflow(UInt64(buffer.count))
    guard !overflow, end <= limit else { throw Errno.fileTooLarge }
    storage.withLock { bytes in
      if end > UInt64(bytes.count) { Self.grow(&bytes, to: Int(end)) }
      bytes.withUnsafeMutableBytes { target in
        UnsafeMutableRawBufferPointer(rebasing: target[Int(offset)..<Int(end)]).copyMemory(from: buffer)
      }
    }
  }

  /// Appends zeros up to `count` bytes with one memset (appending a repeated element goes byte by
  /// byte in a debug build, the fuzzer's short runs).
  private static func grow(_ bytes: inout [UInt8], to count: Int) {
    let added = count - bytes.count
    guard added > 0 else { return }
    bytes += [UInt8](unsafeUninitializedCapacity: added) { buffer, initialized in
      _ = buffer.baseAddress.map { memset($0, 0, added) }
      initialized = added
    }
  }

  public func synchronize() throws {}

  public func size() throws -> UInt64 { storage.withLock { UInt64($0.count) } }

  public func setSize(_ size: UInt64) throws {
    guard size <= limit else { throw Errno.fileTooLarge }
    storage.withLock { bytes in
      if size < UInt64(bytes.count) {
        bytes.removeSubrange(Int(size)...)
      } else {
        Self.grow(&bytes, to: Int(size))
      }
    }
  }

  public func status() throws -> FileStatus {
    let size = try size()
    return FileStatus(
      device: identity.device, inode: identity.inode, size: size, allocatedBytes: (size + 511) / 512 * 512)
  }
}
