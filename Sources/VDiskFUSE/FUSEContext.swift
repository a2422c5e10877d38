import CFuse
import Logging
import Synchronization

/// Everything a request handler needs, reached through libfuse's userdata (never a global):
/// the tree, the read buffers, the logger, and the one-time read-ahead tuning.
final class FUSEContext: Sendable {
  let tree: VirtualTree
  let logger: Logger
  /// Keeps failing requests from flooding the log.
  let errorLimiter = ErrorLogLimiter()
  let buffers: ReadBufferPool
  /// How long the kernel may cache attributes and names. The tree is immutable and a read-only
  /// file never changes, so a long time; a read-write file's size may change (later), so 1 s.
  let attributeTimeout: Double
  /// Set `keep_cache` on open of a read-only file: its pages stay valid across opens.
  let keepCache: Bool
  /// Read-ahead to set once the connection is initialized (KiB), if any.
  let readAheadKilobytes: Int?
  /// `major:minor` of the mount, known after mounting; consumed by the first request after INIT.
  private let pendingReadAheadDevice = Mutex<String?>(nil)
  private let readAheadPending = Atomic<Bool>(false)

  /// Answer reads by splicing file ranges (`FUSE_CAP_SPLICE_WRITE`) when the reply fits the
  /// largest pipe this process can make, in bytes (0: never splice). libfuse falls back to
  /// allocating and copying a reply that does not fit, and stops growing that thread's pipe, so
  /// `replySpliced` checks the fit first.
  let spliceCapacity: Int

  /// The session (an `OpaquePointer`'s bits), for cache invalidation notices; 0 until attached.
  private let session = Atomic<UInt>(0)

  func attach(session pointer: OpaquePointer) {
    session.store(UInt(bitPattern: UnsafeRawPointer(pointer)), ordering: .releasing)
  }

  /// Tells the kernel to drop its cached pages of `inode` in the range (best effort).
  func invalidateCache(inode: UInt64, offset: Int, length: Int) {
    guard let pointer = OpaquePointer(bitPattern: session.load(ordering: .acquiring)) else { return }
    _ = fuse_lowlevel_notify_inval_inode(pointer, fuse_ino_t(inode), off_t(offset), off_t(length))
  }

  /// Open O_DIRECT handles of writable views with direct I/O and parallel writes. Not with a
  /// single worker: invalidating a buffered opener's pages from a write handler may wait on a
  /// read that only another worker could answer.
  let directWrites: Bool

  /// `MountOptions.maxRead`, told to the kernel in `init` (the mount option alone kills the
  /// mount with EPROTO).
  let maxRead: Int?

  init(tree: VirtualTree, options: MountOptions, logger: Logger) {
    self.maxRead = options.maxRead
    self.directWrites = options.threads > 1
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
