import CFuse
import Logging
import Synchronization
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// The request loop: `threads` worker threads, each reading requests from its own clone of the
/// mount's /dev/fuse descriptor (`FUSE_DEV_IOC_CLONE`) into its own buffer and answering them
/// through it (`KernelDispatch`). libfuse only mounted the connection.
///
/// The calling thread starts the workers and waits on `LoopControl.wake` until a worker's
/// connection ends (ENODEV on unmount, DESTROY), `FUSESession.exit` is called, or an exit signal
/// arrives. It then wakes workers blocked in `read` with SIGUSR2 (a no-op handler without
/// SA_RESTART: the read fails with EINTR and the worker sees `isStopping`) and joins them.
///
/// The worker descriptors stay open after the loop (`closeDevices`): a write or fallocate
/// answered late from a `CacheInvalidator` lane replies through the descriptor its request came
/// from, so they are closed only once the lanes have stopped.
final class KernelLoop: @unchecked Sendable {
  // @unchecked: `devices` and `threads` are written by the loop's thread before the workers
  // start and after they are joined; each worker reads only its own descriptor.
  private let master: Int32
  private let context: FUSEContext
  private let connection: KernelConnection
  private let control: LoopControl
  private let logger: Logger
  private let debug: Bool
  private let bufferSize: Int
  private var devices: [Int32] = []
  private let finished = Atomic<Int>(0)
  /// `-o io_uring=on`: a connection without io_uring ends the loop.
  private let requireIOURing: Bool
  /// The io_uring queues, once INIT took FUSE_OVER_IO_URING.
  private let rings = Mutex<RingQueues?>(nil)
  private let ringsStarted = Atomic<Bool>(false)

  init(
    master: Int32, context: FUSEContext, connection: KernelConnection, control: LoopControl, debug: Bool,
    requireIOURing: Bool = false, logger: Logger
  ) {
    self.master = master
    self.requireIOURing = requireIOURing
    self.context = context
    self.connection = connection
    self.control = control
    self.debug = debug
    self.logger = logger
    bufferSize = Int(connection.settings.maxWrite) + Int(CFUSE_REQUEST_HEADER_ROOM)
  }

  /// One descriptor per worker: a clone, or when cloning fails (an old kernel, /dev/fuse not
  /// openable by this user) a `dup` of the mount's descriptor, which shares its queue.
  private func openDevices(_ count: Int) throws {
    var cloneFailure: Int32 = 0
    for _ in 0..<count {
      var fd = cfuse_clone_device(master)
      if fd < 0 {
        cloneFailure = -fd
        fd = fcntl(master, F_DUPFD_CLOEXEC, 0)
      }
      guard fd >= 0 else {
        throw VDiskError(.io, path: "/dev/fuse", "cannot open a descriptor for a worker", errno: errno)
      }
      devices.append(fd)
    }
    if cloneFailure != 0 {
      logger.notice(
        "cannot clone /dev/fuse (\(String(cString: strerror(cloneFailure)))): workers share one descriptor")
    }
  }

  /// Closes the workers' descriptors; call after the loop returned and the lanes stopped.
  func closeDevices() {
    for fd in devices { close(fd) }
    devices = []
  }

  /// Serves until the loop is told to stop; the reason it stopped, and the exit signal if one
  /// did it (`signals`: this thread takes SIGINT, SIGTERM and SIGHUP).
  func run(threads: Int, signals: Bool) throws -> (LoopControl.Reason?, Int32) {
    guard cfuse_install_wakeup_signal() == 0 else {
      throw VDiskError(.io, path: "/dev/fuse", "cannot install the SIGUSR2 handler", errno: errno)
    }
    try openDevices(max(threads, 1))
    var started: [pthread_t] = []
    for fd in devices {
      if let thread = startThread({ self.serve(device: fd) }) { started.append(thread) }
    }
    guard !started.isEmpty else {
      throw VDiskError(.io, path: "/dev/fuse", "cannot start any worker thread")
    }
    if started.count < devices.count {
      logger.warning("started \(started.count) of \(devices.count) worker threads")
    }
    if signals {
      var set = sigset_t()
      sigemptyset(&set)
      for sig in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&set, sig) }
      pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }
    var signal: Int32 = 0
    while true {
      if signals, cfuse_exit_signal() != 0 {
        signal = cfuse_exit_signal()
        break
      }
      if control.isStopping { break }
      _ = sem_wait(control.wake)  // EINTR: a signal; checked above
    }
    control.stop(.exited)  // no-op for the reason when one is recorded; workers see the flag
    while finished.load(ordering: .acquiring) < started.count {
      for thread in started { pthread_kill(thread, SIGUSR2) }  // not joined yet: valid
      usleep(2000)
    }
    for thread in started { pthread_join(thread, nil) }
    rings.withLock { $0 }?.stop()
    return (signal != 0 ? nil : control.stopReason, signal)
  }

  /// Requests answered through io_uring so far (nil: the rings are not in use).
  var ringRequests: Int? { rings.withLock { $0 }?.served }

  /// Large replies committed on the io_uring workers' own rings so far (nil: no rings).
  var ringWorkerCommits: Int? { rings.withLock { $0 }?.workerRingCommits }

  /// After INIT: starts the io_uring queues when it took FUSE_OVER_IO_URING; with
  /// `requireIOURing`, ends the loop when it did not. Once, from the worker that answered INIT.
  private func startRings() {
    guard !ringsStarted.exchange(true, ordering: .acquiringAndReleasing) else { return }
    guard connection.usesIOURing else {
      if requireIOURing {
        control.stop(
          .transportMissing(
            "the kernel did not offer FUSE-over-io_uring (io_uring=on needs Linux 6.14+ with "
              + "/sys/module/fuse/parameters/enable_uring set to Y)"))
      } else {
        logger.debug("io_uring: not offered by the kernel; serving /dev/fuse")
      }
      return
    }
    let payload = Self.ringPayloadCapacity(maxWrite: connection.settings.maxWrite)
    let queues: RingQueues
    do {
      queues = try RingQueues(device: master, payloadCapacity: payload)
    } catch {
      ringFailed("\(error)")
      return
    }
    rings.withLock { $0 = queues }
    let started = queues.start(
      handle: { [self] request, entry in
        if debug { logRequest(request, size: Int(request.header.len)) }
        let req = FUSERequest(device: master, unique: request.unique, entry: entry)
        return KernelDispatch.dispatch(
          request, reply: req, connection: connection, context: context, pipe: nil)
      },
      destroyed: { [self] in control.stop(.unmounted) },
      ended: { [self] queue, ending in
        switch ending {
        case .stopped:
          break
        case .destroyed:
          control.stop(.unmounted)
        case .failed(let code, let what):
          ringFailed("queue \(queue.id): \(what): \(String(cString: strerror(code)))")
        }
      })
    if started {
      logger.debug(
        "io_uring: \(queues.queueCount) queues of \(RingQueues.depth(queues: queues.queueCount)) entries, \(queues.workerCount) workers"
      )
    } else {
      ringFailed("cannot start the io_uring queue threads")
    }
  }

  /// The io_uring queues could not be set up: fatal with `requireIOURing`, else the connection
  /// stays on /dev/fuse (the kernel switches only once every queue has registered).
  private func ringFailed(_ why: String) {
    if requireIOURing {
      control.stop(.transportMissing("FUSE-over-io_uring failed: \(why)"))
    } else {
      logger.notice("io_uring: \(why); serving /dev/fuse")
    }
  }

  /// The payload buffer each entry needs: the kernel refuses one smaller than
  /// max(8 KiB, max_write, max_pages pages) (its `max_payload_sz`).
  static func ringPayloadCapacity(maxWrite: UInt32) -> Int {
    let page = max(4096, sysconf(Int32(_SC_PAGESIZE)))
    let pages = (Int(maxWrite) - 1) / page + 1
    return max(8192, Int(maxWrite), pages * page)
  }

  /// One request in libfuse's `-d` format, which the tests read.
  private func logRequest(_ request: KernelRequest, size: Int) {
    let name = KernelDispatch.name(of: request.opcode)
    logger.debug(
      "unique: \(request.unique), opcode: \(name) (\(request.opcode)), nodeid: \(request.nodeID), insize: \(size), pid: \(request.header.pid)"
    )
  }

  /// A worker: reads and answers requests on `device` until the loop stops or the connection
  /// ends. The exit signals stay with the loop's thread; SIGUSR2 interrupts this one's reads.
  private func serve(device: Int32) {
    var signals = sigset_t()
    sigemptyset(&signals)
    for sig in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&signals, sig) }
    pthread_sigmask(SIG_BLOCK, &signals, nil)
    sigemptyset(&signals)
    sigaddset(&signals, SIGUSR2)
    pthread_sigmask(SIG_UNBLOCK, &signals, nil)
    defer { finished.add(1, ordering: .releasing) }

    var allocated: UnsafeMutableRawPointer?
    guard posix_memalign(&allocated, 4096, bufferSize) == 0, let buffer = allocated else {
      logger.error("cannot allocate a \(bufferSize)-byte request buffer: worker not started")
      return
    }
    defer { free(buffer) }
    let pipe = context.spliceCapacity > 0 ? SplicePipe(size: context.spliceCapacity) : nil

    while !control.isStopping {
      let n = read(device, buffer, bufferSize)
      if n < 0 {
        let code = errno
        switch code {
        case EINTR, EAGAIN:
          continue
        case ENOENT:
          continue  // the request was interrupted before it could be read
        case ENODEV:
          control.stop(.unmounted)
        default:
          logger.error("reading /dev/fuse failed: \(String(cString: strerror(code)))")
          control.stop(.failed(code))
        }
        return
      }
      if n == 0 {
        control.stop(.unmounted)
        return
      }
      guard let request = KernelRequest(UnsafeRawBufferPointer(start: buffer, count: n)) else {
        // The kernel states every request's length: a mismatch is not expected. Answer it if
        // its header is there, so that the caller is not left waiting.
        logger.error("malformed FUSE request of \(n) bytes")
        if n >= MemoryLayout<fuse_in_header>.size {
          let header = buffer.loadUnaligned(as: fuse_in_header.self)
          FUSERequest(device: device, unique: header.unique).replyError(EIO)
        }
        continue
      }
      if debug { logRequest(request, size: n) }
      let outcome = KernelDispatch.dispatch(
        request, reply: FUSERequest(device: device, unique: request.unique), connection: connection,
        context: context, pipe: pipe)
      if request.opcode == FUSE_INIT.rawValue && connection.initialized { startRings() }
      switch outcome {
      case .next:
        continue
      case .destroyed:
        control.stop(.unmounted)
        return
      case .refused(let refusal):
        logger.error("\(refusal)")
        control.stop(.refused(refusal))
        return
      }
    }
  }
}
