import CFuse
import Logging
import Synchronization
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// One FUSE-over-io_uring queue (the kernel keeps one per possible CPU and sends a request to
/// the queue of the CPU its caller runs on): a thread pinned to that CPU, its own io_uring, and
/// `depth` entries registered on the queue. The thread waits for completions: an entry's command
/// completing with 0 carries a request, which it answers (`KernelDispatch`) into the entry and
/// commits with the next fetch in one SQE, submitted with the next wait (one `io_uring_enter`
/// per batch, no `read` or `writev` per request).
///
/// Large reads and writes go to `RingWorkers`, which commit large replies through rings of their
/// own. Other replies made on other threads (small ones by those workers, deferred write replies)
/// reach the queue's thread through `mailbox` and an eventfd it keeps a read armed on, so that
/// the queue's own thread submits their commands: the kernel completes an entry's next request in
/// the task that submitted its command, and a small request belongs on the pinned thread.
final class RingQueue: @unchecked Sendable {
  // @unchecked: `ring`, `entries` and `thread` are used by the queue's thread only (the ring is
  // made and destroyed there); other threads touch only `mailbox`, `wakeFD` and `stopping`.
  let id: UInt16
  private let device: Int32
  private let depth: Int
  private let payloadCapacity: Int
  private let cpu: Int32?
  private var entries: [RingEntry] = []
  private var ring: OpaquePointer?
  private let wakeFD: Int32
  private var wakeBuffer: UInt64 = 0
  private let mailbox = Mutex<[Int]>([])
  private let stopping = Atomic<Bool>(false)
  private let owner = Atomic<UInt>(0)
  /// The threads large requests go to, whose large replies go through their own rings.
  private let workers: RingWorkers
  /// Requests answered (for the tests and the debug log).
  let served = Atomic<Int>(0)

  private static let wakeTag = UInt64.max

  init(
    id: UInt16, device: Int32, depth: Int, payloadCapacity: Int, cpu: Int32?, workers: RingWorkers
  ) throws {
    self.workers = workers
    self.id = id
    self.device = device
    self.depth = depth
    self.payloadCapacity = payloadCapacity
    self.cpu = cpu
    wakeFD = cfuse_eventfd()
    guard wakeFD >= 0 else {
      throw VDiskError(
        .io, path: "/dev/fuse", "cannot make an eventfd for io_uring queue \(id)", errno: errno)
    }
  }

  deinit {
    close(wakeFD)
  }

  /// Commits `entry`'s reply: queued on the ring when called on the queue's thread (submitted
  /// with its next wait); a `large` one made on a worker goes through the worker's own ring
  /// (`RingWorkers`); anything else is handed to the queue's thread.
  func commit(_ entry: RingEntry, large: Bool) {
    if isOwnerThread, let ring {
      _ = queueCommit(entry, on: ring, userData: UInt64(entry.index))
      return
    }
    if large, let worker = workers.current, worker.commit(entry) { return }
    mailbox.withLock { $0.append(entry.index) }
    var one: UInt64 = 1
    _ = write(wakeFD, &one, 8)
  }

  private var isOwnerThread: Bool {
    owner.load(ordering: .acquiring) == UInt(pthread_self())
  }

  /// Tells the queue's thread to stop (from any thread).
  func stop() {
    stopping.store(true, ordering: .releasing)
    var one: UInt64 = 1
    _ = write(wakeFD, &one, 8)
  }

  /// Queues `entry`'s commit and fetch on `ring` (the queue's own, whose SQ holds depth + 1
  /// entries: each entry has at most one command queued, plus the wake read, so it is never full;
  /// or a worker's); false when the SQ is full.
  func queueCommit(_ entry: RingEntry, on ring: OpaquePointer, userData: UInt64) -> Bool {
    cfuse_ring_queue_fuse(
      ring, device, UInt32(FUSE_IO_URING_CMD_COMMIT_AND_FETCH.rawValue), id, entry.commitID, entry.vectors,
      userData) == 0
  }

  /// A READ or WRITE of 64 KiB or more.
  static func isLarge(_ request: KernelRequest) -> Bool {
    switch request.opcode {
    case UInt32(FUSE_READ.rawValue):
      return ((try? request.argument(fuse_read_in.self).size) ?? 0) >= 64 << 10
    case UInt32(FUSE_WRITE.rawValue):
      return request.body.count >= 64 << 10
    default:
      return false
    }
  }

  /// What `serve` ended with.
  enum Ending: Equatable {
    /// Told to stop, or the kernel ended every entry (unmount).
    case stopped
    /// DESTROY arrived through this queue.
    case destroyed
    /// Setting up or registering failed with this errno before any request was served.
    case failed(Int32, String)
  }

  /// The queue's thread: makes the ring, registers the entries, serves until stopped or the
  /// kernel ends every entry. `handle` answers one request.
  func serve(
    handle: @escaping @Sendable (KernelRequest, RingEntry) -> KernelDispatch.Outcome, workers: RingWorkers?,
    destroyedElsewhere: @escaping @Sendable () -> Void
  ) -> Ending {
    owner.store(UInt(pthread_self()), ordering: .releasing)
    if let cpu { _ = cfuse_pin_to_cpu(cpu) }
    var error: Int32 = 0
    var size: UInt32 = 1
    while Int(size) < depth + 1 { size <<= 1 }
    guard let made = cfuse_ring_create(size, &error) else {
      return .failed(error, "cannot set up an io_uring")
    }
    ring = made
    defer {
      // Submit what is queued (DESTROY's reply) before the ring goes.
      var none = cfuse_completion()
      _ = cfuse_ring_wait(made, 0, &none, 0)
      ring = nil
      entries = []
      cfuse_ring_destroy(made)
    }
    for index in 0..<depth {
      guard let entry = RingEntry(index: index, payloadCapacity: payloadCapacity, queue: self) else {
        return .failed(ENOMEM, "cannot allocate io_uring entry buffers")
      }
      entries.append(entry)
      _ = cfuse_ring_queue_fuse(
        made, device, UInt32(FUSE_IO_URING_CMD_REGISTER.rawValue), id, 0, entry.vectors, UInt64(index))
    }
    _ = cfuse_ring_queue_read(made, wakeFD, &wakeBuffer, Self.wakeTag)

    var completions = [cfuse_completion](repeating: cfuse_completion(), count: 64)
    var ready: [(KernelRequest, RingEntry)] = []
    var live = depth
    var servedAny = false
    while live > 0 {
      let count = completions.withUnsafeMutableBufferPointer {
        cfuse_ring_wait(made, 1, $0.baseAddress, Int32($0.count))
      }
      if count < 0 {
        if count == -EINTR || count == -EAGAIN { continue }
        return servedAny ? .stopped : .failed(-count, "io_uring_enter failed")
      }
      ready.removeAll(keepingCapacity: true)
      for c in completions[0..<Int(count)] {
        if c.user_data == Self.wakeTag {
          if stopping.load(ordering: .acquiring) { return .stopped }
          let waiting = mailbox.withLock { m in
            defer { m.removeAll(keepingCapacity: true) }
            return m
          }
          for index in waiting { _ = queueCommit(entries[index], on: made, userData: UInt64(index)) }
          _ = cfuse_ring_queue_read(made, wakeFD, &wakeBuffer, Self.wakeTag)
          continue
        }
        let index = Int(c.user_data)
        guard index >= 0, index < entries.count else { continue }
        guard c.result == 0 else {
          // ENOTCONN/ECONNABORTED: the connection is going; EOPNOTSUPP/EINVAL at REGISTER: no
          // io_uring for this connection (requests stay on /dev/fuse).
          live -= 1
          if !servedAny && c.result != -ENOTCONN && c.result != -ECONNABORTED {
            return .failed(-c.result, "the kernel refused the io_uring entry")
          }
          continue
        }
        servedAny = true
        let entry = entries[index]
        guard let request = entry.request() else {
          entry.commit(error: -EIO, payloadLength: 0)
          continue
        }
        served.add(1, ordering: .relaxed)
        ready.append((request, entry))
      }
      // To the workers, which answer in parallel on the other CPUs: every large read or write
      // (its copy is long enough to pay for the hand-over, and the reader's CPU is busy copying
      // what came before). Small requests stay here, on their readers' CPU, a burst of them too:
      // handing them over cost two more wakeups each (4 readers on 2 CPUs, 4 KiB O_DIRECT
      // random reads: 100–127 k IOPS handed over, 161–177 k kept, classic loop 118–125 k).
      if let workers, workers.isRunning {
        var kept: [(KernelRequest, RingEntry)] = []
        for (request, entry) in ready {
          if !Self.isLarge(request) {
            kept.append((request, entry))
          } else {
            workers.submit {
              if handle(request, entry) == .destroyed { destroyedElsewhere() }
            }
          }
        }
        ready = kept
      }
      for (request, entry) in ready where handle(request, entry) == .destroyed {
        return .destroyed
      }
    }
    return .stopped
  }
}
