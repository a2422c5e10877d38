import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// Where a daemon runs once `fuse_daemonize` has forked: on a thread made after the fork.
///
/// The Swift runtime's locks and `Synchronization.Mutex` are priority-inheritance futexes whose
/// word holds the owner's thread id, and each caches its thread's id in thread-local storage the
/// first time that thread locks. `fork` copies the cache: the child's main thread keeps locking
/// with its parent's id, a thread that no longer exists. Uncontended that goes unnoticed; when
/// another thread waits on such a lock, the kernel finds no owner (`FUTEX_LOCK_PI` fails with
/// ESRCH), so the runtime's waiters spin forever and a `Mutex` waiter traps. (Found under
/// ThreadSanitizer, whose session loop serves requests on the main thread too: every request
/// thread spun in the runtime's `once_slow`. Production builds were exposed wherever the main
/// thread met another one on a lock: the readiness thread, the invalidation lanes, teardown.)
///
/// A thread created after the fork has an empty cache and locks with its own id. The forked main
/// thread only starts it and waits; the exit signals are blocked on the main thread so that they
/// reach the new one, whose session loop unblocks them (`FUSESession.loop`).
public enum AfterFork {
  /// Runs `body` on a new thread and waits for it; rethrows what it threw. Call from the forked
  /// main thread right after `fuse_daemonize`, while no other thread exists, and do nothing on the
  /// main thread afterwards but return or exit.
  public static func run(_ body: () throws -> Void) throws {
    var signals = sigset_t()
    sigemptyset(&signals)
    for sig in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&signals, sig) }
    pthread_sigmask(SIG_BLOCK, &signals, nil)
    try withoutActuallyEscaping(body) { body in
      let work = Work(body)
      guard
        let thread = startThread({
          do { try work.body() } catch { work.error = error }
        })
      else {
        // No thread (out of resources): serve here, exposed as before, rather than not at all.
        return try body()
      }
      pthread_join(thread, nil)
      if let error = work.error { throw error }
    }
  }

  /// The body and what it threw, handed to the thread and read back after `pthread_join`.
  private final class Work: @unchecked Sendable {
    // @unchecked: written by the new thread only, read by the main thread after pthread_join.
    let body: () throws -> Void
    var error: (any Error)?

    init(_ body: @escaping () throws -> Void) { self.body = body }
  }
}
