import CFuse
import Logging
import Synchronization

/// Everything a request handler needs, handed to it by the request loop (never a global):
/// the tree, the read buffers, the logger, and the one-time read-ahead tuning.
final class FUSEContext: Sendable {
  let tree: VirtualTree
  let logger: Logger
  /// Keeps failing requests from flooding the log.
  let errorLimiter = ErrorLogLimiter()
  let buffers: ReadBufferPool
  /// How long the kernel may cache attributes and names. The tree is immutable and a read-only
  /// file never changes, so a long time; a read-write file's size and allocation change, so 1 s.
  let attributeTimeout: Double
  /// Set `keep_cache` on open: pages stay valid across opens (read-write views invalidate what
  /// changes, see `changed`).
  let keepCache: Bool
  /// Read-ahead to set once the connection is initialized (KiB), if any.
  let readAheadKilobytes: Int?
  /// `major:minor` of the mount, known after mounting; consumed by the first request after INIT.
  private let pendingReadAheadDevice = Mutex<String?>(nil)
  private let readAheadPending = Atomic<Bool>(false)

  /// Answer reads by splicing file ranges into each worker's pipe (`SplicePipe`) when the reply
  /// fits the largest pipe this process can make, in bytes (0: never splice). A reply that does
  /// not fit is copied (`replySpliced` checks the fit first).
  let spliceCapacity: Int

  /// Inodes of writable views that may hold cached pages, and what they show.
  let pageCache = PageCacheRegistry()
  /// Sends their invalidations before the changes that made them stale are answered.
  let invalidator = CacheInvalidator()
  /// Backing ids of passed-through views (FUSE passthrough).
  let backingFiles = BackingFiles()

  /// Bytes `range` of `view` changed through `inode` (a write, fallocate or truncate): drops the
  /// pages that now show stale bytes, then calls `reply` — at once when nothing is cached, else
  /// from a `CacheInvalidator` lane. `kernelKeepsOwnPages`: the kernel keeps `inode`'s own pages
  /// right by itself (anything but a direct-I/O write).
  func changed(
    _ view: DiskView, _ range: Range<UInt64>, through inode: UInt64, kernelKeepsOwnPages: Bool,
    then reply: @escaping @Sendable () -> Void
  ) {
    let job = pageCache.job(changed: view, range, through: inode, kernelKeepsOwnPages: kernelKeepsOwnPages)
    invalidator.run(job, then: reply)
  }

  /// As `changed(_:_:through:kernelKeepsOwnPages:then:)` for a request already answered (a
  /// background request, which must never wait for an invalidation): the pages are dropped soon
  /// after, on a lane.
  func changed(_ view: DiskView, _ range: Range<UInt64>, through inode: UInt64, kernelKeepsOwnPages: Bool) {
    let job = pageCache.job(changed: view, range, through: inode, kernelKeepsOwnPages: kernelKeepsOwnPages)
    if job != nil { invalidator.run(job) {} }
  }

  /// Keep the kernel's asynchronous direct I/O (`FUSE_CAP_ASYNC_DIO`): only where nothing is
  /// ever invalidated (a read-only mount; see `InitNegotiation` and `CacheInvalidator`).
  let asyncDirectIO: Bool

  init(tree: VirtualTree, options: MountOptions, logger: Logger) {
    self.asyncDirectIO = options.readOnly
    let capacity = options.splice ? cfuse_pipe_capacity(4 << 20) : 0
    self.spliceCapacity = capacity >= 256 << 10 ? capacity : 0
    self.tree = tree
    self.logger = logger
    self.buffers = ReadBufferPool(bufferSize: 1 << 20)
    self.attributeTimeout = options.readOnly ? 3600 : 1
    self.keepCache = options.keepCache
    self.readAheadKilobytes = options.readAheadKilobytes
  }

  /// How long the kernel may cache a node's attributes and name: briefly for entries that can
  /// change while mounted (snapshots QEMU adds or deletes, re-read partition tables).
  func timeout(for node: VirtualNode) -> Double {
    node.isVolatile ? min(1, attributeTimeout) : attributeTimeout
  }

  /// Called after mounting: remembers the device whose read-ahead to raise.
  func scheduleReadAhead(device: String) {
    guard readAheadKilobytes != nil else { return }
    pendingReadAheadDevice.withLock { $0 = device }
    readAheadPending.store(true, ordering: .releasing)
  }

  /// Called by every request handler but `init`: the first one (necessarily after the kernel
  /// processed the INIT reply, which would otherwise lower the value again) sets the read-ahead.
  @inline(__always)
  func requestArrived() {
    guard readAheadPending.load(ordering: .acquiring) else { return }
    guard
      readAheadPending.compareExchange(expected: true, desired: false, ordering: .acquiringAndReleasing)
        .exchanged,
      let device = pendingReadAheadDevice.withLock({ $0 }), let kilobytes = readAheadKilobytes
    else { return }
    MountPoint.setReadAhead(kilobytes: kilobytes, device: device, logger: logger)
  }
}
