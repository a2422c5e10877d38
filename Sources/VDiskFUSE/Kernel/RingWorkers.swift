import CFuse
import Synchronization
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// Threads that answer the large reads and writes a queue's thread hands over (read-ahead sends
/// four 960 KiB reads together), so that they are served in parallel on the other CPUs while
/// small requests (a reader at queue depth 1) stay on the thread pinned to their reader's CPU.
///
/// Each worker has an io_uring of its own. A large reply it makes (`largeReply` bytes or more:
/// a read-ahead's data) is committed through that ring, so the kernel's copy of the reply into
/// the page cache runs on the worker's CPU rather than on the pinned thread's, which is also the
/// reader's (measured: dd bs=1M over the rings left one CPU a third idle while the other copied
/// both the reply and the reader's data). The entry's next request then arrives on the worker's
/// ring (the kernel completes an entry's command in the task that submitted it); the worker
/// answers it, and a small reply goes back through the queue's thread, which takes the entry
/// back. Every other reply made here is committed by the entry's own thread (`RingQueue.commit`).
final class RingWorkers: @unchecked Sendable {
  // @unchecked: `workers` is written by `start` and read by `stop` and `submit` after it, on the
  // loop's threads in order.
  private var workers: [RingWorker] = []
  private var threads: [pthread_t] = []
  private let next = Atomic<Int>(0)

  /// A reply of this many bytes or more is committed on the worker's own ring.
  static let largeReply = 64 << 10

  init() {}

  /// Starts `count` threads; false when none could be started (the queues then answer every
  /// request themselves). `handle` answers a request that arrives on a worker's ring.
  func start(
    count: Int, handle: @escaping @Sendable (KernelRequest, RingEntry) -> KernelDispatch.Outcome,
    destroyed: @escaping @Sendable () -> Void
  ) -> Bool {
    for _ in 0..<count {
      guard let worker = try? RingWorker(handle: handle, destroyed: destroyed) else { break }
      guard let thread = startThread({ worker.serve() }) else { break }
      workers.append(worker)
      threads.append(thread)
    }
    return !threads.isEmpty
  }

  var isRunning: Bool { !threads.isEmpty }

  /// Runs `job` on a worker: the one with the fewest jobs waiting, the next in turn on a tie.
  func submit(_ job: @escaping @Sendable () -> Void) {
    guard !workers.isEmpty else { return job() }
    let start = next.wrappingAdd(1, ordering: .relaxed).oldValue
    var chosen = workers[start % workers.count]
    for step in 1..<workers.count {
      let candidate = workers[(start + step) % workers.count]
      if candidate.backlog < chosen.backlog { chosen = candidate }
    }
    chosen.submit(job)
  }

  /// Replies committed on the workers' own rings so far.
  var ownRingCommits: Int { workers.reduce(0) { $0 + $1.ownRingCommits.load(ordering: .relaxed) } }

  /// The worker running on the calling thread, if any.
  var current: RingWorker? {
    let me = UInt(pthread_self())
    return workers.first { $0.owner.load(ordering: .relaxed) == me }
  }

  /// Finishes the queued jobs, stops the threads and joins them (the workers stay, with their
  /// counts).
  func stop() {
    for worker in workers { worker.stop() }
    for thread in threads { pthread_join(thread, nil) }
    threads = []
  }
}

/// One `RingWorkers` thread: its jobs, its io_uring, and the entries whose command is pending on
/// that ring.
final class RingWorker: @unchecked Sendable {
  // @unchecked: `ring` and `owned` belong to the worker's thread; other threads touch only
  // `jobs`, `backlog`, `wakeFD` and `stopping`.
  private var ring: OpaquePointer?
  private var owned: [UInt64: RingEntry] = [:]
  private let jobs = Mutex<[@Sendable () -> Void]>([])
  private let waiting = Atomic<Int>(0)
  private let stopping = Atomic<Bool>(false)
  private let wakeFD: Int32
  private var wakeBuffer: UInt64 = 0
  let owner = Atomic<UInt>(0)
  /// Replies committed on this worker's ring.
  let ownRingCommits = Atomic<Int>(0)
  private let handle: @Sendable (KernelRequest, RingEntry) -> KernelDispatch.Outcome
  private let destroyed: @Sendable () -> Void

  private static let wakeTag = UInt64.max
  /// Submission queue entries: commands of owned entries (never more than the SQ holds: a
  /// commit that does not fit goes to the entry's queue thread) plus the wake read.
  private static let ringSize: UInt32 = 64

  init(
    handle: @escaping @Sendable (KernelRequest, RingEntry) -> KernelDispatch.Outcome,
    destroyed: @escaping @Sendable () -> Void
  ) throws {
    wakeFD = cfuse_eventfd()
    guard wakeFD >= 0 else {
      throw VDiskError(.io, path: "/dev/fuse", "cannot make an eventfd for an io_uring worker", errno: errno)
    }
    self.handle = handle
    self.destroyed = destroyed
  }

  deinit {
    close(wakeFD)
  }

  /// Jobs handed over and not finished.
  var backlog: Int { waiting.load(ordering: .relaxed) }

  func submit(_ job: @escaping @Sendable () -> Void) {
    waiting.add(1, ordering: .relaxed)
    jobs.withLock { $0.append(job) }
    wake()
  }

  func stop() {
    stopping.store(true, ordering: .releasing)
    wake()
  }

  private func wake() {
    var one: UInt64 = 1
    _ = write(wakeFD, &one, 8)
  }

  /// Queues `entry`'s commit (and fetch) on this worker's ring, submitted with its next wait;
  /// false when called from another thread, without a ring, or with the SQ full.
  func commit(_ entry: RingEntry) -> Bool {
    guard let ring, owner.load(ordering: .relaxed) == UInt(pthread_self()) else { return false }
    let key = UInt64(UInt(bitPattern: Unmanaged.passUnretained(entry).toOpaque()))
    guard entry.queue.queueCommit(entry, on: ring, userData: key) else { return false }
    owned[key] = entry
    ownRingCommits.add(1, ordering: .relaxed)
    return true
  }

  fileprivate func serve() {
    owner.store(UInt(pthread_self()), ordering: .releasing)
    var signals = sigset_t()
    sigemptyset(&signals)
    for sig in [SIGINT, SIGTERM, SIGHUP, SIGUSR2] { sigaddset(&signals, sig) }
    pthread_sigmask(SIG_BLOCK, &signals, nil)
    var error: Int32 = 0
    ring = cfuse_ring_create(Self.ringSize, &error)
    defer {
      if let ring { cfuse_ring_destroy(ring) }
      ring = nil
      owned = [:]
    }
    guard let ring, cfuse_ring_queue_read(ring, wakeFD, &wakeBuffer, Self.wakeTag) == 0 else {
      // No ring: jobs only, their replies committed by the queues' threads.
      if let made = ring { cfuse_ring_destroy(made) }
      ring = nil
      serveWithoutRing()
      return
    }
    var completions = [cfuse_completion](repeating: cfuse_completion(), count: 64)
    while true {
      let count = completions.withUnsafeMutableBufferPointer {
        cfuse_ring_wait(ring, 1, $0.baseAddress, Int32($0.count))
      }
      if count < 0 {
        if count == -EINTR || count == -EAGAIN { continue }
        serveWithoutRing()
        return
      }
      for c in completions[0..<Int(count)] {
        if c.user_data == Self.wakeTag {
          // Told to stop: the jobs handed over before are run first.
          let stop = stopping.load(ordering: .acquiring)
          runJobs()
          if stop { return }
          _ = cfuse_ring_queue_read(ring, wakeFD, &wakeBuffer, Self.wakeTag)
          continue
        }
        // An owned entry's command completed: its next request, or its end (unmount).
        guard let entry = owned.removeValue(forKey: c.user_data), c.result == 0 else { continue }
        guard let request = entry.request() else {
          entry.commit(error: -EIO, payloadLength: 0)
          continue
        }
        entry.queue.served.add(1, ordering: .relaxed)
        if handle(request, entry) == .destroyed { destroyed() }
      }
    }
  }

  /// Runs the jobs waiting.
  private func runJobs() {
    let taken = jobs.withLock { list in
      defer { list.removeAll(keepingCapacity: true) }
      return list
    }
    for job in taken {
      job()
      waiting.subtract(1, ordering: .relaxed)
    }
  }

  private func serveWithoutRing() {
    while true {
      var value: UInt64 = 0
      guard read(wakeFD, &value, 8) == 8 || errno == EINTR else { return }
      let stop = stopping.load(ordering: .acquiring)
      runJobs()
      if stop { return }
    }
  }
}
