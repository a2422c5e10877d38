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

  init(tree: VirtualTree, options: MountOptions, logger: Logger) {
    self.tree = tree
    self.logger = logger
    self.buffers = ReadBufferPool(bufferSize: 1 << 20, retained: options.threads + 2)
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
