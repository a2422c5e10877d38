import CFuse
import Synchronization
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// Sends page-cache invalidation notices (`FUSE_NOTIFY_INVAL_INODE`) for a change, then
/// answers the request that made it, so that whoever reads after the write, fallocate or truncate
/// returned sees the new bytes.
///
/// Never on a request worker: the kernel drops a page only once it can lock it, and a page is
/// locked while a read of it waits for its reply, which only a free worker can send. Every worker
/// could be inside such an invalidation (4 writers), leaving none to answer the read. Here the
/// workers hand the notices and the reply to one of two lanes (a thread each, started on first use)
/// and go back to serving requests.
///
/// Two lanes, because a buffered write holds its own pages locked until it is answered: its
/// notices (for the partitions that alias `disk.raw`, which take no page-cache writes: see
/// `PageCacheRegistry`) go to the first lane, whose notices wait only for reads. Notices that may
/// wait for a buffered write of `disk.raw` go to the second lane; that write's reply comes from
/// the first lane or from its worker, never from behind them. Neither lane can wait for itself.
///
/// Only synchronous requests wait here (write, fallocate, setattr). A background request (a
/// read-ahead, the writeback of mmap'd pages, asynchronous direct I/O) holds one of the kernel's
/// few background slots until answered, and a read-ahead that finds them all taken blocks while
/// holding its locked pages: were a background request's answer to wait for an invalidation of
/// those pages, nothing would move (seen with mmap writers beside buffered readers). So writeback
/// writes are answered first and invalidate after, and asynchronous direct I/O is turned off
/// (`InitNegotiation`).
final class CacheInvalidator: Sendable {
  /// The /dev/fuse descriptor notices are written to; -1 until attached. The session keeps it
  /// open until the lanes have stopped.
  private let device = Atomic<Int32>(-1)
  private let readersOnly = SerialLane()
  private let mayWaitForWriters = SerialLane()

  func attach(device fd: Int32) {
    device.store(fd, ordering: .releasing)
  }

  /// Runs `reply` at once when `job` is nil; else on a lane after sending the job's notices.
  func run(_ job: PageCacheRegistry.Job?, then reply: @escaping @Sendable () -> Void) {
    guard let job else { return reply() }
    let lane = job.mayWaitForWriters ? mayWaitForWriters : readersOnly
    lane.submit { [self] in
      for notice in job.notices { send(notice) }
      reply()
    }
  }

  /// Tells the kernel to drop the notice's pages (and the inode's cached attributes). ENOENT (the
  /// kernel holds nothing of the inode) is the usual answer and means nothing is stale.
  private func send(_ notice: PageCacheRegistry.Notice) {
    let fd = device.load(ordering: .acquiring)
    guard fd >= 0 else { return }
    // The kernel adds offset and length as signed 64-bit numbers: past that, "to the end" (0).
    let offset = min(notice.offset, UInt64(Int64.max))
    let length = notice.length > UInt64(Int64.max) - offset ? 0 : notice.length
    _ = cfuse_notify_inval_inode(fd, notice.inode, Int64(offset), Int64(length))
  }

  /// Finishes what was submitted and stops the lanes; call before the session is destroyed.
  func stop() {
    readersOnly.stop()
    mayWaitForWriters.stop()
  }
}

/// A thread that runs submitted work in order, started on first use (after `fuse_daemonize`,
/// which a thread would not survive).
final class SerialLane: @unchecked Sendable {
  // @unchecked: `semaphore` is allocated once in init and freed in deinit (after the thread ended);
  // everything else is in `state`.
  private struct State {
    var queue: [@Sendable () -> Void] = []
    var thread: pthread_t?
    var started = false
    var stopping = false
  }
  private let state = Mutex(State())
  private let semaphore: UnsafeMutablePointer<sem_t>

  init() {
    semaphore = .allocate(capacity: 1)
    sem_init(semaphore, 0, 0)
  }

  deinit {
    stop()
    sem_destroy(semaphore)
    semaphore.deallocate()
  }

  func submit(_ work: @escaping @Sendable () -> Void) {
    let (queued, start) = state.withLock { s -> (Bool, Bool) in
      guard !s.stopping else { return (false, false) }
      s.queue.append(work)
      defer { s.started = true }
      return (true, !s.started)
    }
    guard queued else { return work() }  // stopped: nothing left to wait for
    if start { startServing() }
    sem_post(semaphore)
  }

  private func startServing() {
    if let thread = startThread({ self.serve() }) {
      state.withLock { $0.thread = thread }
    } else {
      // No thread (out of resources): run the work here rather than never answering.
      while let work = state.withLock({ $0.queue.isEmpty ? nil : $0.queue.removeFirst() }) { work() }
    }
  }

  private func serve() {
    while true {
      while sem_wait(semaphore) != 0 && errno == EINTR {}
      let (work, done) = state.withLock { s -> ((@Sendable () -> Void)?, Bool) in
        if !s.queue.isEmpty { return (s.queue.removeFirst(), false) }
        return (nil, s.stopping)
      }
      if let work { work() }
      if done { return }
    }
  }

  /// Runs what is queued, then ends the thread and waits for it.
  func stop() {
    let thread = state.withLock { s -> pthread_t? in
      s.stopping = true
      defer { s.thread = nil }
      return s.thread
    }
    guard let thread else { return }
    sem_post(semaphore)
    pthread_join(thread, nil)
  }
}
