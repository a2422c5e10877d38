import Logging
import Synchronization
import SystemPackage
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// The blocks of one read-only remote object kept on local disk (`-o cache_dir=DIR`), so that a
/// remount does not fetch them again. Keyed by what identifies the content: location, version tag
/// (ETag; RBD image and snapshot id), size and block size, hashed into a folder name
/// `DIR/<key>/` holding `data` (a sparse file, each block at its offset in the object), `blocks`
/// (one byte per block, 1 = present) and `identity` (the key's parts, for people).
///
/// A block's mark is written only after its data, and marks are written in batches after an
/// `fdatasync` of the data, so a crash leaves at worst blocks that are stored but not marked
/// (fetched again), never a mark without its data. A failing cache directory is logged once and
/// then left alone: the mount goes on fetching.
public final class PersistentBlocks: Sendable {
  private let data: FileDescriptor
  private let marks: FileDescriptor
  private let blockSize: UInt64
  private let state: Mutex<State>
  private let folder: String
  private static let batch = 32
  /// The most blocks an object kept here may have (16 Ti blocks of 1 MiB: 16 MiB of marks).
  static let maxBlocks: UInt64 = 1 << 24

  private struct State {
    /// One byte per block, as in the `blocks` file: 1 = stored.
    var present: [UInt8]
    var pending: [UInt64] = []
    var failed = false
  }

  /// Opens (or makes) the cache of `object` in `directory`; nil with a log line when the
  /// directory cannot be used.
  public static func open(
    for object: any RemoteObject, in directory: String, blockSize: Int, logger: Logger
  ) -> PersistentBlocks? {
    let version = object.version
    let identity = "\(object.location)\n\(version.tag)\n\(version.size)\n\(blockSize)\n"
    let folder = directory + "/" + hexKey(identity)
    // The size is the store's word (a server's Content-Length): one mark byte per block is kept
    // in memory, so a size past what any disk holds is not believed here.
    guard version.size / UInt64(blockSize) < maxBlocks else {
      logger.warning(
        "cache_dir \(directory): \(object.location) claims \(version.size) bytes; not keeping its blocks there"
      )
      return nil
    }
    do {
      return try PersistentBlocks(
        folder: folder, identity: identity, size: version.size, blockSize: blockSize)
    } catch {
      logger.warning("cache_dir \(directory): cannot keep blocks of \(object.location) there: \(error)")
      return nil
    }
  }

  private init(folder: String, identity: String, size: UInt64, blockSize: Int) throws {
    self.folder = folder
    self.blockSize = UInt64(blockSize)
    if mkdir(folder, 0o700) != 0 && errno != EEXIST { throw Errno(rawValue: errno) }
    let count = Int((size + UInt64(blockSize) - 1) / UInt64(blockSize))
    let options: FileDescriptor.OpenOptions = [.create, .closeOnExec]
    data = try FileDescriptor.open(
      folder + "/data", .readWrite, options: options, permissions: [.ownerReadWrite])
    do {
      marks = try FileDescriptor.open(
        folder + "/blocks", .readWrite, options: options, permissions: [.ownerReadWrite])
    } catch {
      try? data.close()
      throw error
    }
    var present = [UInt8](repeating: 0, count: count)
    let marksFile = marks
    _ = try? present.withUnsafeMutableBytes { try marksFile.read(fromAbsoluteOffset: 0, into: $0) }
    state = Mutex(State(present: present))
    if let text = try? FileDescriptor.open(
      folder + "/identity", .writeOnly, options: [.create, .truncate, .closeOnExec],
      permissions: [.ownerReadWrite])
    {
      _ = try? text.writeAll(identity.utf8)
      try? text.close()
    }
  }

  deinit {
    writeMarks()
    try? data.close()
    try? marks.close()
  }

  /// The stored bytes of block `index` (`length` of them), or nil.
  public func block(_ index: UInt64, length: Int) -> [UInt8]? {
    let known = state.withLock {
      $0.failed ? false : (Int(index) < $0.present.count && $0.present[Int(index)] == 1)
    }
    guard known else { return nil }
    let bytes = try? [UInt8](unsafeUninitializedCapacity: length) { buffer, initialized in
      initialized = try data.read(
        fromAbsoluteOffset: Int64(index * blockSize), into: UnsafeMutableRawBufferPointer(buffer))
    }
    guard let bytes, bytes.count == length else { return nil }
    return bytes
  }

  /// Keeps the fetched block `index`.
  public func keep(_ index: UInt64, _ bytes: [UInt8]) {
    guard state.withLock({ !$0.failed && Int(index) < $0.present.count && $0.present[Int(index)] == 0 })
    else {
      return
    }
    do {
      _ = try bytes.withUnsafeBytes { try data.writeAll(toAbsoluteOffset: Int64(index * blockSize), $0) }
    } catch {
      state.withLock { $0.failed = true }
      return
    }
    let due = state.withLock { state in
      state.present[Int(index)] = 1
      state.pending.append(index)
      return state.pending.count >= Self.batch
    }
    if due { writeMarks() }
  }

  /// Makes the data durable, then marks the blocks written since the last call.
  public func writeMarks() {
    let pending = state.withLock { state in
      defer { state.pending.removeAll() }
      return state.failed ? [] : state.pending
    }
    guard !pending.isEmpty else { return }
    guard fdatasync(data.rawValue) == 0 else { return }
    let one: [UInt8] = [1]
    for index in pending {
      _ = try? one.withUnsafeBytes { try marks.writeAll(toAbsoluteOffset: Int64(index), $0) }
    }
  }

  /// FNV-1a 64 of `text`, as 16 hex digits.
  static func hexKey(_ text: String) -> String {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
    let digits = String(hash, radix: 16)
    return String(repeating: "0", count: 16 - digits.count) + digits
  }
}
