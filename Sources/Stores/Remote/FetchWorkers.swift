import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// Threads that fetch blocks in the background: prefetch of sequential reads, and the other
/// blocks of a read that misses several. None run until `start` is called: a mount starts them
/// once it has forked into the background (threads do not survive `fork`, and a lock one of them
/// held at the fork would stay held in the child); until then `submit` refuses and callers fetch
/// on their own thread.
///
/// `@unchecked Sendable`: `jobs`, `running` and `started` are touched with `mutex` held.
public final class FetchWorkers: @unchecked Sendable {
  public typealias Job = @Sendable () -> Void

  private let mutex: UnsafeMutablePointer<pthread_mutex_t>
  private let queued: UnsafeMutablePointer<pthread_cond_t>
  private var jobs: [Job] = []
  private var head = 0
  private var started = 0
  private var idle = 0
  private var threadLimit = 0

  /// The process's workers, shared by every remote object (what `start` starts).
  public static let shared = FetchWorkers()

  public init() {
    mutex = .allocate(capacity: 1)
    mutex.initialize(to: pthread_mutex_t())
    pthread_mutex_init(mutex, nil)
    queued = .allocate(capacity: 1)
    queued.initialize(to: pthread_cond_t())
    pthread_cond_init(queued, nil)
  }

  // The shared instance lives as long as the process; test instances are only dropped with no
  // thread started (threads hold a reference).

  /// Allows up to `threads` worker threads, made as jobs arrive.
  public func start(threads: Int) {
    locked { threadLimit = max(threadLimit, threads) }
  }

  public var isRunning: Bool { locked { threadLimit > 0 } }

  /// Queues `job` for a worker; false (and `job` not queued) before `start`.
  @discardableResult
  public func submit(_ job: @escaping Job) -> Bool {
    enum Outcome { case refused, queued, spawn }
    let outcome: Outcome = locked {
      guard threadLimit > 0 else { return .refused }
      jobs.append(job)
      if idle > 0 {
        pthread_cond_signal(queued)
        return .queued
      }
      guard started < threadLimit else { return .queued }
      started += 1
      return .spawn
    }
    if outcome == .spawn && !spawnThread() {
      // No thread (out of resources): with no worker at all, run what is queued here, so that
      // no claimed block waits for a worker that will never come.
      let none = locked {
        started -= 1
        return started == 0
      }
      while none, let queuedJob = takeJob() { queuedJob() }
    }
    return outcome != .refused
  }

  private func takeJob() -> Job? { locked { dequeue() } }

  /// The next queued job, nil when none; `mutex` held.
  private func dequeue() -> Job? {
    guard head < jobs.count else { return nil }
    let job = jobs[head]
    head += 1
    if head == jobs.count {
      jobs.removeAll(keepingCapacity: true)
      head = 0
    }
    return job
  }

  /// Jobs waiting for a worker (prefetch skips ahead when the queue is long).
  public var backlog: Int { locked { jobs.count - head } }

  private func spawnThread() -> Bool {
    guard let thread = startThread({ [self] in work() }) else { return false }
    pthread_detach(thread)
    return true
  }

  private func work() {
    while true {
      let job: Job? = locked {
        while head == jobs.count {
          idle += 1
          pthread_cond_wait(queued, mutex)
          idle -= 1
        }
        return dequeue()
      }
      job?()
    }
  }

  private func locked<R>(_ body: () -> R) -> R {
    pthread_mutex_lock(mutex)
    defer { pthread_mutex_unlock(mutex) }
    return body()
  }
}
