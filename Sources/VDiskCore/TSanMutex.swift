// ThreadSanitizer builds only (`make sanitize`, scripts/sanitize.sh, passes
// `-Xswiftc -DVDISKFS_TSAN`); production builds compile nothing from this file and keep
// `Synchronization.Mutex`.
//
// Why: the toolchain's `Mutex` takes a contended lock inside the kernel (a priority-inheritance
// futex, in `_lockSlow`/`_unlockSlow` of the uninstrumented libswiftSynchronization), so TSan sees
// no acquire/release between two threads that both hold the lock and reports every contended
// `withLock` pair as a data race (about 60 such reports on the qcow2 writer's concurrency tests,
// /work/shared/FUSE-SWIFT-NOTES.md). Suppressing them would hide real races on the same state;
// a pthread mutex is intercepted by TSan, so its reports mean something.
//
// How: a module's own declaration shadows an imported one, so each module that uses `Mutex` has
// a file `TSanMutex.swift` declaring `typealias Mutex = TSanMutex` under the same condition; every
// `Mutex(...)`/`Mutex<T>` in that module then means this type, with no change to the code using
// it. scripts/sanitize.sh refuses to run when a module uses `Mutex` without that file.
#if VDISKFS_TSAN
  #if canImport(Glibc)
    import Glibc
  #endif

  /// `Synchronization.Mutex`'s API (`init`, `withLock`, `withLockIfAvailable`) over a
  /// `pthread_mutex_t`, which ThreadSanitizer understands. Noncopyable like `Mutex`, so code that
  /// compiles against one compiles against the other.
  public struct TSanMutex<Value: ~Copyable>: ~Copyable, @unchecked Sendable {
    // @unchecked: `value` is only touched with `lock` held.
    private let lock: UnsafeMutablePointer<pthread_mutex_t>
    private let value: UnsafeMutablePointer<Value>

    public init(_ initialValue: consuming sending Value) {
      lock = .allocate(capacity: 1)
      lock.initialize(to: pthread_mutex_t())
      pthread_mutex_init(lock, nil)
      value = .allocate(capacity: 1)
      value.initialize(to: initialValue)
    }

    deinit {
      value.deinitialize(count: 1)
      value.deallocate()
      pthread_mutex_destroy(lock)
      lock.deinitialize(count: 1)
      lock.deallocate()
    }

    /// Runs `body` with the value, holding the lock.
    public borrowing func withLock<Result: ~Copyable, E: Error>(
      _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result {
      pthread_mutex_lock(lock)
      defer { pthread_mutex_unlock(lock) }
      return try body(&value.pointee)
    }

    /// Runs `body` if the lock is free now, else returns nil.
    public borrowing func withLockIfAvailable<Result: ~Copyable, E: Error>(
      _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result? {
      guard pthread_mutex_trylock(lock) == 0 else { return nil }
      defer { pthread_mutex_unlock(lock) }
      return try body(&value.pointee)
    }
  }

  /// In this module `Mutex` is the TSan-visible lock (see the top of this file).
  typealias Mutex = TSanMutex
#endif
