// ThreadSanitizer builds only (`-Xswiftc -DVDISKFS_TSAN`, scripts/sanitize.sh); production builds
// use libfuse's multithreaded loop (FUSESession.loop).
#if VDISKFS_TSAN
  import CFuse
  import Synchronization

  #if canImport(Glibc)
    import Glibc
  #endif

  /// The session loop of a TSan build, without libfuse's multithreaded loop. That loop ends by
  /// `pthread_cancel`-ing its workers while they block in `read(/dev/fuse)`; the cancellation
  /// unwinds through TSan's `read` interceptor without its cleanup, and TSan kills the process as
  /// the worker exits ("thread T1 finished with ignores enabled", exit 66), before the daemon has
  /// written anything back. Not a race of ours, and not suppressible.
  ///
  /// Here the calling thread runs libfuse's single-threaded `fuse_session_loop` (it returns the
  /// signal that ended it, as the multithreaded loop does) and `threads - 1` helpers receive and
  /// process requests of the same session with the same handlers, so requests still run
  /// concurrently. When the loop returns, helpers blocked in `read` are woken by SIGUSR2 (a no-op
  /// handler without SA_RESTART: the read fails with EINTR), see the stop flag and are joined.
  enum TSanSessionLoop {
    static func run(_ session: OpaquePointer, threads: Int) -> Int32 {
      signal(SIGUSR2) { _ in }
      siginterrupt(SIGUSR2, 1)
      let helpers = Helpers(session: session)
      var started: [pthread_t] = []
      for _ in 1..<max(threads, 1) {
        if let thread = helpers.start() { started.append(thread) }
      }
      let result = fuse_session_loop(session)
      helpers.stopping.store(true, ordering: .sequentiallyConsistent)
      while helpers.finished.load(ordering: .sequentiallyConsistent) < started.count {
        for thread in started { pthread_kill(thread, SIGUSR2) }  // not joined yet: valid
        usleep(10_000)
      }
      for thread in started { pthread_join(thread, nil) }
      return result
    }
  }

  /// What the helper threads share.
  private final class Helpers: @unchecked Sendable {
    // @unchecked: `session` is libfuse's, whose receive/process calls are thread-safe (its own
    // multithreaded loop makes them from every worker); the rest is atomic.
    let session: OpaquePointer
    let stopping = Atomic<Bool>(false)
    let finished = Atomic<Int>(0)

    init(session: OpaquePointer) { self.session = session }

    func start() -> pthread_t? {
      let box = Unmanaged.passRetained(self).toOpaque()
      var thread = pthread_t()
      let made = pthread_create(
        &thread, nil,
        { argument in
          guard let argument else { return nil }
          Unmanaged<Helpers>.fromOpaque(argument).takeRetainedValue().serve()
          return nil
        }, box)
      guard made == 0 else {
        Unmanaged<Helpers>.fromOpaque(box).release()
        return nil
      }
      return thread
    }

    /// Receives and processes requests until the session ends (unmounted: receive returns 0; an
    /// error) or `stopping` is set. The exit signals stay with the loop's thread.
    private func serve() {
      var signals = sigset_t()
      sigemptyset(&signals)
      for sig in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&signals, sig) }
      pthread_sigmask(SIG_BLOCK, &signals, nil)
      sigemptyset(&signals)
      sigaddset(&signals, SIGUSR2)
      pthread_sigmask(SIG_UNBLOCK, &signals, nil)
      var buffer = fuse_buf()
      defer {
        free(buffer.mem)
        finished.add(1, ordering: .sequentiallyConsistent)
      }
      while !stopping.load(ordering: .sequentiallyConsistent) {
        let received = fuse_session_receive_buf(session, &buffer)
        if received == -EINTR { continue }
        if received <= 0 { return }
        fuse_session_process_buf(session, &buffer)
      }
    }
  }
#endif
