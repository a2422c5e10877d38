import Synchronization
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// Threads that answer io_uring requests handed over by a queue's thread when several arrive at
/// once (read-ahead sends four 960 KiB reads together): the queue's thread keeps one and passes
/// the rest here, so a burst is served in parallel on the other CPUs while a lone request (a
/// reader at queue depth 1) never leaves the thread pinned to its reader's CPU. A reply made here
/// is committed by the entry's own thread (`RingQueue.commit`).
final class RingWorkers: @unchecked Sendable {
  // @unchecked: `threads` is written by `start` and read by `stop`, on the loop's threads in
  // order; the jobs are under `jobs`' mutex and counted by the semaphore.
  private let jobs = Mutex<[@Sendable () -> Void]>([])
  private let available: UnsafeMutablePointer<sem_t>
  private let stopping = Atomic<Bool>(false)
  private var threads: [pthread_t] = []

  init() {
    available = .allocate(capacity: 1)
    sem_init(available, 0, 0)
  }

  deinit {
    sem_destroy(available)
    available.deallocate()
  }

  /// Starts `count` threads; false when none could be started (the queues then answer every
  /// request themselves).
  func start(count: Int) -> Bool {
    for _ in 0..<count {
      guard let thread = startThread({ [self] in serve() }) else { break }
      threads.append(thread)
    }
    return !threads.isEmpty
  }

  var isRunning: Bool { !threads.isEmpty }

  /// Runs `job` on a worker.
  func submit(_ job: @escaping @Sendable () -> Void) {
    jobs.withLock { $0.append(job) }
    sem_post(available)
  }

  private func serve() {
    var signals = sigset_t()
    sigemptyset(&signals)
    for sig in [SIGINT, SIGTERM, SIGHUP, SIGUSR2] { sigaddset(&signals, sig) }
    pthread_sigmask(SIG_BLOCK, &signals, nil)
    while true {
      while sem_wait(available) != 0 {}  // EINTR
      let job = jobs.withLock { $0.isEmpty ? nil : $0.removeFirst() }
      if let job {
        job()
      } else if stopping.load(ordering: .acquiring) {
        return
      }
    }
  }

  /// Finishes the queued jobs, stops the threads and joins them.
  func stop() {
    stopping.store(true, ordering: .releasing)
    for _ in threads { sem_post(available) }
    for thread in threads { pthread_join(thread, nil) }
    threads = []
  }
}
