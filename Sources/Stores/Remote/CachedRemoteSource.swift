import Logging
import Synchronization
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// A remote object as a `ByteSource`: reads go through the block cache (`BlockCache`), fetch a
/// missing block once however many readers want it, fetch the other blocks of a wide read in
/// parallel, and prefetch ahead of sequential readers; transient failures are retried with
/// doubling backoff, then that read fails with EIO. If the object turns out to have changed since
/// it was opened, every later read fails with EIO (one log line) rather than mixing two versions.
/// Writes (an RBD image head) go through to the object and patch the cached blocks.
public final class CachedRemoteSource: ByteSource {
  public let object: any RemoteObject
  public let identity: SourceIdentity
  private let cache: BlockCache
  private let workers: FetchWorkers
  private let options: RemoteOptions
  private let blockSize: UInt64
  /// Keys this object's blocks in the shared cache.
  private let id: UInt64
  private let state: Mutex<State>
  /// `-o cache_dir`: blocks kept on disk across mounts (read-only objects only).
  private let persistent: PersistentBlocks?
  private let logger = Logger(label: "vdiskfs")
  private static let nextID = Atomic<UInt64>(1)
  /// The most a sequential reader is prefetched ahead, in blocks (32 MiB of 1 MiB blocks).
  public static let prefetchBlocks: UInt64 = 32
  /// How long a sequential run must be, in blocks, before anything is fetched ahead: longer than
  /// the kernel's own read-ahead of a mount (3.75 MiB), so that file-system metadata a reader
  /// touches here and there (each touch one read-ahead window) fetches only what it reads.
  public static let sequentialBlocks: UInt64 = 8

  private struct State {
    var size: UInt64
    var changed = false
    /// Bumped by every write and resize: a block fetched across one is returned, not cached.
    var epoch: UInt64 = 0
    var lastEnd: UInt64 = .max
    /// Where the current sequential run began.
    var runStart: UInt64 = 0
    /// Blocks before this one have been prefetched (or read).
    var prefetchedTo: UInt64 = 0
  }

  public init(
    _ object: any RemoteObject, cache: BlockCache, workers: FetchWorkers = .shared, options: RemoteOptions
  ) {
    self.object = object
    self.cache = cache
    self.workers = workers
    self.options = options
    blockSize = UInt64(cache.blockSize)
    id = Self.nextID.wrappingAdd(1, ordering: .relaxed).oldValue
    identity = Self.identity(of: object.location)
    state = Mutex(State(size: object.version.size))
    let logger = self.logger
    persistent =
      object.isWritable || !object.version.identifiesContent
      ? nil
      : options.cacheDirectory.flatMap {
        PersistentBlocks.open(for: object, in: $0, blockSize: cache.blockSize, logger: logger)
      }
  }

  deinit { cache.drop(object: id) }

  /// A stable identity per location (FNV-1a), so that a chain naming itself is found as a loop.
  static func identity(of location: String) -> SourceIdentity {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in location.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
    return SourceIdentity(device: .max - 1, inode: hash)
  }

  public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
    let (size, changed) = state.withLock { ($0.size, $0.changed) }
    if changed { throw changedError() }
    guard offset < size, buffer.count > 0 else { return 0 }
    let count = Int(min(UInt64(buffer.count), size - offset))
    let end = offset + UInt64(count)
    let first = offset / blockSize
    let last = (end - 1) / blockSize
    noteRead(offset: offset, end: end, lastBlock: last, size: size)
    if last > first { fetchAhead(first + 1...last, size: size) }
    var done = 0
    for index in first...last {
      let data = try block(index, size: size)
      let blockStart = index * blockSize
      let fromOffset = Int(offset + UInt64(done) - blockStart)
      let n = min(count - done, data.count - fromOffset)
      guard n > 0 else { throw changedError() }
      data.withUnsafeBytes { data in
        guard let to = buffer.baseAddress, let from = data.baseAddress else { return }
        (to + done).copyMemory(from: from + fromOffset, byteCount: n)
      }
      done += n
    }
    return done
  }

  /// The block's bytes: cached, fetched by another reader, or fetched here.
  private func block(_ index: UInt64, size: UInt64) throws -> [UInt8] {
    let key = BlockCache.Key(object: id, block: index)
    switch cache.lookup(key) {
    case .cached(let data): return data
    case .claimed:
      let epoch = state.withLock { $0.epoch }
      do {
        let data = try fetchBlock(index, size: size)
        cache.fill(key, with: data, keep: state.withLock { $0.epoch == epoch })
        return data
      } catch {
        cache.abandon(key)
        throw error
      }
    }
  }

  /// One block from the cache directory, or fetched with retries (and kept there). Short data
  /// means the object shrank: it changed.
  private func fetchBlock(_ index: UInt64, size: UInt64) throws -> [UInt8] {
    let start = index * blockSize
    let length = Int(min(blockSize, size - start))
    if let kept = persistent?.block(index, length: length) { return kept }
    let data = try withRetries("read of \(length) bytes at \(hex(start))") {
      let data = try [UInt8](unsafeUninitializedCapacity: length) { buffer, initialized in
        initialized = try object.fetch(into: UnsafeMutableRawBufferPointer(buffer), at: start)
        initialized = min(initialized, length)
      }
      guard data.count == length else {
        throw RemoteFailure(
          .changed, location: object.location, "returned \(data.count) of \(length) bytes at \(hex(start))")
      }
      return data
    }
    persistent?.keep(index, data)
    return data
  }

  /// Runs `attempt`, retrying transient failures with doubling backoff from 100 ms; a change of
  /// the object marks it changed for good.
  private func withRetries<R>(_ what: String, _ attempt: () throws -> R) throws -> R {
    var delay: UInt32 = 100_000
    var tries = 0
    while true {
      do {
        return try attempt()
      } catch let failure as RemoteFailure {
        switch failure.kind {
        case .transient where tries < options.retries:
          tries += 1
          usleep(delay)
          delay = min(delay * 2, 5_000_000)
        case .transient:
          throw VDiskError(
            .io, path: object.location, "\(what) failed after \(tries + 1) tries: \(failure.detail)",
            errno: EIO)
        case .changed:
          markChanged(failure.detail)
          throw changedError()
        case .final:
          throw failure.asVDiskError
        }
      }
    }
  }

  private func markChanged(_ detail: String) {
    let first = state.withLock { state in
      defer { state.changed = true }
      return !state.changed
    }
    if first {
      logger.error(
        "\(object.location) changed while mounted (\(detail)); every read of it fails with EIO from now on")
    }
  }

  private func changedError() -> VDiskError {
    VDiskError(
      .io, path: object.location, "changed since it was opened; remount to see the new version", errno: EIO)
  }

  /// Sequential readers (each read near where the last ended) get the next blocks fetched ahead
  /// once their run is `sequentialBlocks` long: as many blocks as the run is long, up to
  /// `prefetchBlocks`.
  private func noteRead(offset: UInt64, end: UInt64, lastBlock: UInt64, size: UInt64) {
    let range: ClosedRange<UInt64>? = state.withLock { state in
      let near =
        state.lastEnd != .max && offset + blockSize >= state.lastEnd && offset <= state.lastEnd + blockSize
      if !near { state.runStart = offset }
      state.lastEnd = end
      let run = end > state.runStart ? (end - state.runStart) / blockSize : 0
      guard run >= Self.sequentialBlocks else { return nil }
      let blocks = min(Self.prefetchBlocks, run)
      let lastInObject = (size - 1) / blockSize
      let from = max(state.prefetchedTo, lastBlock + 1)
      let to = min(lastBlock + blocks, lastInObject)
      guard from <= to else { return nil }
      state.prefetchedTo = to + 1
      return from...to
    }
    if let range { fetchAhead(range, size: size) }
  }

  /// Fetches absent blocks of `range` on the workers (nothing before they are started).
  private func fetchAhead(_ range: ClosedRange<UInt64>, size: UInt64) {
    guard workers.isRunning else { return }
    for index in range {
      let key = BlockCache.Key(object: id, block: index)
      guard cache.claimIfAbsent(key) else { continue }
      let epoch = state.withLock { $0.epoch }
      let submitted = workers.submit { [self] in
        do {
          let data = try fetchBlock(index, size: size)
          cache.fill(key, with: data, keep: state.withLock { $0.epoch == epoch })
        } catch {
          cache.abandon(key)
        }
      }
      if !submitted { cache.abandon(key) }
    }
  }

  // MARK: Writes (an RBD image head)

  public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
    guard object.isWritable else { throw VDiskError(.readOnly, path: object.location, "is read-only") }
    guard buffer.count > 0 else { return }
    let end = offset + UInt64(buffer.count)
    if end > state.withLock({ $0.size }) { try setSize(end) }
    state.withLock { $0.epoch &+= 1 }
    try withRetries("write of \(buffer.count) bytes at \(hex(offset))") {
      try object.store(buffer, at: offset)
    }
    var done = 0
    while done < buffer.count {
      let at = offset + UInt64(done)
      let index = at / blockSize
      let within = Int(at - index * blockSize)
      let n = min(buffer.count - done, Int(blockSize) - within)
      cache.patch(
        BlockCache.Key(object: id, block: index), at: within,
        with: UnsafeRawBufferPointer(rebasing: buffer[done..<(done + n)]))
      done += n
    }
    state.withLock { $0.epoch &+= 1 }
  }

  public func synchronize() throws {
    guard object.isWritable else { return }
    try withRetries("flush") { try object.flush() }
  }

  public func size() throws -> UInt64 { state.withLock { $0.size } }

  public func setSize(_ size: UInt64) throws {
    guard object.isWritable else { throw VDiskError(.readOnly, path: object.location, "is read-only") }
    state.withLock { $0.epoch &+= 1 }
    try withRetries("resize to \(size) bytes") { try object.resize(to: size) }
    // The block holding the new end changes too (bytes past it read as zeros when grown again).
    cache.drop(object: id, from: size / blockSize)
    state.withLock {
      $0.size = size
      $0.epoch &+= 1
    }
  }

  public func extendWithZeros(from offset: UInt64, to end: UInt64) throws {
    if end > state.withLock({ $0.size }) { try setSize(end) }
  }

  public func status() throws -> FileStatus {
    let size = state.withLock { $0.size }
    return FileStatus(device: identity.device, inode: identity.inode, size: size, allocatedBytes: size)
  }
}
