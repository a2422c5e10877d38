import Synchronization
import SystemPackage

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
      if end > UInt64(bytes.count) {
        bytes.append(contentsOf: repeatElement(0, count: Int(end) - bytes.count))
      }
      bytes.withUnsafeMutableBytes { target in
        UnsafeMutableRawBufferPointer(rebasing: target[Int(offset)..<Int(end)]).copyMemory(from: buffer)
      }
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
        bytes.append(contentsOf: repeatElement(0, count: Int(size) - bytes.count))
      }
    }
  }

  public func status() throws -> FileStatus {
    let size = try size()
    return FileStatus(
      device: identity.device, inode: identity.inode, size: size, allocatedBytes: (size + 511) / 512 * 512)
  }
}
