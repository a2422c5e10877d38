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
  /// The kernel's queues (one per possible CPU); `threads` is the threads serving them.
  let queueCount: Int

  /// Rings for `device`: per possible CPU, one pinned thread with one entry and `helpers(queues:)`
  /// unpinned threads with one entry each, every entry with a payload of `payloadCapacity` bytes.
  init(device: Int32, payloadCapacity: Int) throws {
    let count = Self.possibleCPUs()
    let helpers = Self.helpers(queues: count)
    var made: [RingQueue] = []
    for id in 0..<count {
      made.append(
        try RingQueue(
          id: UInt16(id), device: device, depth: 1, payloadCapacity: payloadCapacity, cpu: Int32(id)))
      for _ in 0..<helpers {
        made.append(
          try RingQueue(id: UInt16(id), device: device, depth: 1, payloadCapacity: payloadCapacity, cpu: nil))
      }
    }
    queues = made
    queueCount = count
  }

  /// Unpinned threads per queue beside its pinned one. The kernel hands a request to the entry
  /// committed last, so a reader at queue depth 1 keeps meeting the same thread; the pinned one
  /// shares the reader's CPU (no cross-CPU wakeup to reach it); a burst (read-ahead sends four
  /// 960 KiB requests at once) spreads over the helpers, which the scheduler runs on the other
  /// CPUs. Measured on 2 CPUs (2 GiB qcow2, fresh mounts, medians of 4–5 interleaved rounds):
  /// dd bs=1M 1.4–1.5 GB/s with one pinned thread of 8 entries, 1.8–2.1 with three helpers of one
  /// entry (classic loop 2.2); fio 4 KiB QD1 25–52 k IOPS pinned alone, 39–50 k with the helpers,
  /// 39 k all unpinned (classic 17–46 k in the same rounds). What remains at QD1 is the reader's
  /// own migration: woken while our thread still runs on its CPU, it is put on the idle one (a
  /// halted vCPU here, woken by IPI) and its next request goes to that CPU's queue; a reader
  /// confined to one CPU reaches 50–54 k (2× the classic loop). Making the pinned thread
  /// SCHED_IDLE keeps the reader in place (48 k, 1.65×) but lets any busy task starve the
  /// request that thread holds: not done. Fewer helpers on many-CPU machines: threads and
  /// payloads grow with the queues.
  static func helpers(queues: Int) -> Int {
    max(1, min(3, 8 / max(queues, 1)))
  }

  /// Entries per queue (the memory they pin down: entries × max_payload per queue).
  static func depth(queues: Int) -> Int { 1 + helpers(queues: queues) }

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

  var threadCount: Int { queues.count }

  /// Requests answered through the rings so far.
  var served: Int { queues.reduce(0) { $0 + $1.served.load(ordering: .relaxed) } }

  /// Starts every queue's thread; `handle` answers a request, `ended` hears how each queue
  /// ended (on its thread). False when no thread could be started.
  func start(
    handle: @escaping @Sendable (KernelRequest, RingEntry) -> KernelDispatch.Outcome,
    ended: @escaping @Sendable (RingQueue, RingQueue.Ending) -> Void
  ) -> Bool {
    for queue in queues {
      let thread = startThread { [self] in
        var signals = sigset_t()
        sigemptyset(&signals)
        for sig in [SIGINT, SIGTERM, SIGHUP, SIGUSR2] { sigaddset(&signals, sig) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        let ending = queue.serve(handle: handle)
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
  }
}
