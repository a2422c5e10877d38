#if canImport(Glibc)
  import Glibc
#endif

/// Guest allocation units (clusters, grains, blocks) held by the write engine for a write from
/// `prepareWrite` to `commitWrite`/`abortWrite` (and for discards and resizes while they run), so
/// that two allocating writes to one unit serialize while writes to other units proceed. Ranges
/// are taken whole or not at all (no hold-and-wait, so no deadlock); a caller whose range overlaps
/// a held one sleeps until it is released. Readers never take these.
///
/// A pthread mutex and condition variable, because `Synchronization.Mutex` cannot wait.
/// `@unchecked Sendable`: `held` is only touched with `mutex` locked.
public final class RangeLocks: @unchecked Sendable {
  private let mutex: UnsafeMutablePointer<pthread_mutex_t>
  private let released: UnsafeMutablePointer<pthread_cond_t>
  /// Held unit index ranges; a handful at a time (one per write in flight).
  private var held: [ClosedRange<UInt64>] = []

  public init() {
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

  /// Waits until no held range overlaps `units`, then holds it.
  public func acquire(_ units: ClosedRange<UInt64>) {
    pthread_mutex_lock(mutex)
    while held.contains(where: { $0.overlaps(units) }) {
      pthread_cond_wait(released, mutex)
    }
    held.append(units)
    pthread_mutex_unlock(mutex)
  }

  /// Releases a range taken by `acquire` and wakes the waiters.
  public func release(_ units: ClosedRange<UInt64>) {
    pthread_mutex_lock(mutex)
    if let i = held.firstIndex(of: units) { held.remove(at: i) }
    pthread_cond_broadcast(released)
    pthread_mutex_unlock(mutex)
  }

  /// Number of ranges held (for tests).
  public var heldCount: Int {
    pthread_mutex_lock(mutex)
    defer { pthread_mutex_unlock(mutex) }
    return held.count
  }
}

extension RangeLocks {
  /// Holds the units of `unit` bytes that guest bytes `[offset, end)` touch while `body` runs.
  public func holding<R>(_ offset: UInt64, _ end: UInt64, unit: UInt64, _ body: () throws -> R) rethrows -> R
  {
    let units = (offset / unit)...((max(end, offset + 1) - 1) / unit)
    acquire(units)
    defer { release(units) }
    return try body()
  }

  /// Holds every unit (a resize) while `body` runs.
  public func holdingAll<R>(_ body: () throws -> R) rethrows -> R {
    let all: ClosedRange<UInt64> = 0...UInt64.max
    acquire(all)
    defer { release(all) }
    return try body()
  }
}
