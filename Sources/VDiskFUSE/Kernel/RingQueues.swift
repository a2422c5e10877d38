import CFuse
import Logging
import Synchronization
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// FUSE-over-io_uring for one connection: a `RingQueue` per possible CPU, each on its own
/// thread pinned to its CPU, started once INIT negotiated `FUSE_OVER_IO_URING`. The kernel
/// switches the connection to the rings once every queue has an entry registered; until then
/// (and always for FORGET and INTERRUPT) requests arrive on /dev/fuse, served by `KernelLoop`'s
/// workers.
///
/// Pinning keeps a queue's thread on the CPU whose callers it serves: a reader blocked on its
/// request leaves that CPU to the thread that answers it, with no migration or cross-CPU wakeup.
final class RingQueues: @unchecked Sendable {
  // @unchecked: `queues` and `threads` are set in `start` (once, under `started`) and read by
  // `stop` after it; each queue's state is its own thread's.
  private let queues: [RingQueue]
  private var threads: [pthread_t] = []
  private let finished = Atomic<Int>(0)
  /// The kernel's queues (one per possible CPU), one thread each.
  let queueCount: Int
  /// Threads answering large requests (`RingWorkers`).
  let workerCount: Int
  private let workers: RingWorkers

  /// Rings for `device`: per possible CPU one thread pinned to it with `depth(queues:)` entries,
  /// every entry with a payload of `payloadCapacity` bytes; and `workers(queues:)` unpinned
  /// threads that answer large reads and writes (`RingWorkers`).
  init(device: Int32, payloadCapacity: Int) throws {
    let count = Self.possibleCPUs()
    let workers = RingWorkers()
    var made: [RingQueue] = []
    for id in 0..<count {
      made.append(
        try RingQueue(
          id: UInt16(id), device: device, depth: Self.depth(queues: count), payloadCapacity: payloadCapacity,
          cpu: Int32(id), workers: workers))
    }
    queues = made
    self.workers = workers
    queueCount = count
    workerCount = Self.workers(queues: count)
  }

  /// Entries per queue: a read-ahead burst (four requests) arrives whole, plus one. Fewer on
  /// many-CPU machines (the payloads, max_payload each, are per entry).
  static func depth(queues: Int) -> Int { max(2, min(5, 40 / max(queues, 1))) }

  /// Threads answering large requests beside the pinned ones. Measured on 2 CPUs (2 GiB qcow2, fresh
  /// mounts, interleaved rounds): one pinned thread per queue alone reads dd bs=1M at 1.4–1.5
  /// GB/s against the classic loop's 2.2 (a read-ahead burst served one request after another
  /// on the reader's own CPU); unpinned helper rings of their own (the kernel gives a request to
  /// the entry committed last) read at 1.8–2.1 but then a queue-depth-1 reader ends up on an
  /// unpinned helper after any burst and pays a cross-CPU wakeup per request (24 k IOPS against
  /// 49–53 k on the pinned thread). Here a small request never leaves the pinned thread for
  /// long: an entry a worker took with a large reply comes back with the next small one.
  static func workers(queues: Int) -> Int { max(2, min(4, queues + 1)) }

  /// The kernel makes one queue per possible CPU (`num_possible_cpus`) and picks a request's
  /// queue by its caller's CPU number: as many queues as the highest possible CPU number + 1.
  static func possibleCPUs() -> Int {
    if let text = MountPoint.readProcFile("/sys/devices/system/cpu/possible") {
      // "0-1", "0-3,8-11": the last number is the highest.
      let numbers = text.split { $0 == "," || $0 == "-" || $0 == "\n" || $0 == " " }.compactMap { Int($0) }
      if let highest = numbers.max(), highest >= 0, highest < 4096 { return highest + 1 }
    }
    return max(1, sysconf(Int32(_SC_NPROCESSORS_CONF)))
  }

  /// Large replies committed on the workers' own rings so far.
  var workerRingCommits: Int { workers.ownRingCommits }

  var threadCount: Int { queues.count + workerCount }

  /// Requests answered through the rings so far.
  var served: Int { queues.reduce(0) { $0 + $1.served.load(ordering: .relaxed) } }

  /// Starts every queue's thread; `handle` answers a request, `ended` hears how each queue
  /// ended (on its thread). False when no thread could be started.
  func start(
    handle: @escaping @Sendable (KernelRequest, RingEntry) -> KernelDispatch.Outcome,
    destroyed: @escaping @Sendable () -> Void,
    ended: @escaping @Sendable (RingQueue, RingQueue.Ending) -> Void
  ) -> Bool {
    let workers = workers.start(count: workerCount, handle: handle, destroyed: destroyed) ? workers : nil
    for queue in queues {
      let thread = startThread { [self] in
        var signals = sigset_t()
        sigemptyset(&signals)
        for sig in [SIGINT, SIGTERM, SIGHUP, SIGUSR2] { sigaddset(&signals, sig) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        let ending = queue.serve(handle: handle, workers: workers, destroyedElsewhere: destroyed)
        finished.add(1, ordering: .releasing)
        ended(queue, ending)
      }
      guard let thread else {
        stop()
        return false
      }
      threads.append(thread)
    }
    return true
  }

  /// Stops every queue and joins their threads.
  func stop() {
    for queue in queues { queue.stop() }
    for thread in threads { pthread_join(thread, nil) }
    threads = []
    workers.stop()
  }
}
