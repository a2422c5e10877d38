import CFuse
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// What the workers of one mount share about its connection: the INIT settings and outcome.
final class KernelConnection: Sendable {
  let settings: InitNegotiation.Settings
  private let initializedFlag = Atomic<Bool>(false)
  /// The negotiated minor version and flags (for the log and the tests), once initialized.
  private let negotiatedMinor = Atomic<UInt32>(0)
  private let negotiatedFlags = Atomic<UInt64>(0)

  init(settings: InitNegotiation.Settings) {
    self.settings = settings
  }

  var initialized: Bool { initializedFlag.load(ordering: .acquiring) }

  func markInitialized(_ reply: fuse_init_out) {
    negotiatedMinor.store(reply.minor, ordering: .relaxed)
    negotiatedFlags.store(UInt64(reply.flags) | UInt64(reply.flags2) << 32, ordering: .relaxed)
    initializedFlag.store(true, ordering: .releasing)
  }

  /// Whether INIT took FUSE-over-io_uring.
  var usesIOURing: Bool { (negotiated?.flags ?? 0) & FUSE_OVER_IO_URING != 0 }

  /// (minor, flags) as answered to INIT; nil before.
  var negotiated: (minor: UInt32, flags: UInt64)? {
    guard initialized else { return nil }
    return (negotiatedMinor.load(ordering: .relaxed), negotiatedFlags.load(ordering: .relaxed))
  }
}

/// How a session loop is told to end, from any thread or a signal handler: a semaphore the loop's
/// thread waits on (posted by the exit-signal handler, by `FUSESession.exit`, and by a worker
/// whose connection ended), and the first reason given.
final class LoopControl: @unchecked Sendable {
  // @unchecked: `wake` is allocated in init and freed in deinit; sem_post/sem_wait are
  // thread-safe (and sem_post async-signal-safe); the rest is atomic or under a mutex.
  enum Reason: Equatable, Sendable {
    /// `FUSESession.exit`.
    case exited
    /// The connection ended: unmounted (ENODEV) or DESTROY.
    case unmounted
    /// Reading the device failed with this errno.
    case failed(Int32)
    /// The kernel's protocol is too old.
    case refused(InitNegotiation.Refusal)
    /// A transport the mount requires (`-o io_uring=on`) is not there; why.
    case transportMissing(String)
  }

  let wake: UnsafeMutablePointer<sem_t>
  private let stopping = Atomic<Bool>(false)
  private let reason = Mutex<Reason?>(nil)

  init() {
    wake = .allocate(capacity: 1)
    sem_init(wake, 0, 0)
  }

  deinit {
    sem_destroy(wake)
    wake.deallocate()
  }

  var isStopping: Bool { stopping.load(ordering: .acquiring) }

  /// Records `why` (unless a reason is already recorded) and wakes the loop.
  func stop(_ why: Reason) {
    reason.withLock { if $0 == nil { $0 = why } }
    stopping.store(true, ordering: .releasing)
    sem_post(wake)
  }

  var stopReason: Reason? { reason.withLock { $0 } }
}
