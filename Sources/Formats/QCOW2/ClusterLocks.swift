#if canImport(Glibc)
  import Glibc
#endif

/// Guest clusters held by writes between `prepareWrite` and `commitWrite`/`abortWrite` (and by
/// discards and resizes while they run), so that two allocating writes to one cluster serialize
/// while writes to other clusters proceed. Ranges are taken whole or not at all (no hold-and-wait,
/// so no deadlock); a caller whose range overlaps a held one sleeps until it is released.
///
/// A pthread mutex and condition variable, because `Synchronization.Mutex` cannot wait.
/// `@unchecked Sendable`: `held` is only touched with `mutex` locked.
final class ClusterLocks: @unchecked Sendable {
  private let mutex: UnsafeMutablePointer<pthread_mutex_t>
  private let released: UnsafeMutablePointer<pthread_cond_t>
  /// Held guest cluster index ranges; a handful at a time (one per write in flight).
  private var held: [ClosedRange<UInt64>] = []

  init() {
    mutex = .allocate(capacity: 1)
    mutex.initialize(to: pthread_mutex_t())
    pthread_mutex_init(mutex, nil)
    released = .allocate(capacity: 1)
    released.initialize(to: pthread_cond_t())
    pthread_cond_init(released, nil)
  }

  deinit {
    pthread_cond_destroy(released)
    pthread_mutex_destroy(mutex)
    released.deallocate()
    mutex.deallocate()
  }

  /// Waits until no held range overlaps `clusters`, then holds it.
  func acquire(_ clusters: ClosedRange<UInt64>) {
    pthread_mutex_lock(mutex)
    while held.contains(where: { $0.overlaps(clusters) }) {
      pthread_cond_wait(released, mutex)
    }
    held.append(clusters)
    pthread_mutex_unlock(mutex)
  }

  /// Releases a range taken by `acquire` and wakes the waiters.
  func release(_ clusters: ClosedRange<UInt64>) {
    pthread_mutex_lock(mutex)
    if let i = held.firstIndex(of: clusters) { held.remove(at: i) }
    pthread_cond_broadcast(released)
    pthread_mutex_unlock(mutex)
  }

  /// Number of ranges held (for tests).
  var heldCount: Int {
    pthread_mutex_lock(mutex)
    defer { pthread_mutex_unlock(mutex) }
    return held.count
  }
}
