#if canImport(Glibc)
  import Glibc
#endif

/// A readers-writer lock (a `pthread_rwlock_t`), for state that is read on every request and
/// changed rarely. `Synchronization.Mutex` is a priority-inheritance futex on Linux: measured with
/// 8 FUSE workers on 2 CPUs and `fio --numjobs=4`, contended hits on one mutex spent 46 % of the
/// daemon's time in `lockSlow` and random-read IOPS fell to a third. Readers of this lock do not
/// exclude each other.
public final class ReadWriteLock: @unchecked Sendable {
  private let lock: UnsafeMutablePointer<pthread_rwlock_t>

  public init() {
    lock = .allocate(capacity: 1)
    lock.initialize(to: pthread_rwlock_t())
    pthread_rwlock_init(lock, nil)
  }

  deinit {
    pthread_rwlock_destroy(lock)
    lock.deinitialize(count: 1)
    lock.deallocate()
  }

  /// Runs `body` holding the lock shared (with other readers).
  @inline(__always)
  public func withReadLock<R>(_ body: () throws -> R) rethrows -> R {
    pthread_rwlock_rdlock(lock)
    defer { pthread_rwlock_unlock(lock) }
    return try body()
  }

  /// Runs `body` holding the lock exclusively.
  @inline(__always)
  public func withWriteLock<R>(_ body: () throws -> R) rethrows -> R {
    pthread_rwlock_wrlock(lock)
    defer { pthread_rwlock_unlock(lock) }
    return try body()
  }
}
