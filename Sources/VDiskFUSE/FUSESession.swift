import CFuse
import Logging
import Synchronization
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// One mount of a `VirtualTree` of a chain. libfuse parses the `-o` options, mounts
/// (`fuse_session_mount`), daemonizes and unmounts; the requests are read and answered by
/// vdiskfs's own loop (`KernelLoop`, Kernel/). The C session is freed in `deinit`.
///
/// Lifecycle: `init` (fuse_session_new) → `installSignalHandlers` → `mount(at:)` → `daemonize`
/// (optional) → `loop` → `unmount` → deinit. `exit` and `unmount` may be called from another
/// thread while `loop` runs; `loop` returns once the session is unmounted (by `unmount`,
/// `fusermount3 -u` or `umount`), `exit` is called, or a handled signal arrives.
public final class FUSESession: @unchecked Sendable {
  // @unchecked: `session` is set once in init and freed in deinit; the mutable state lives in
  // `state` under a mutex; libfuse's mount calls are serialized by `state`.
  private let session: OpaquePointer
  private let context: FUSEContext
  private let connection: KernelConnection
  private let control = LoopControl()
  private let options: MountOptions
  private let logger: Logger

  private struct State {
    var mountpoint: String?
    var mounted = false
    var signalHandlers = false
    /// The loop, once started: its worker descriptors are closed in deinit.
    var loop: KernelLoop?
    /// The descriptor notifications are written to (a duplicate of the mount's), once looping.
    var notifyDevice: Int32 = -1
  }
  private let state = Mutex(State())

  public convenience init(chain: LayerChain, options: MountOptions, logger: Logger) throws {
    let source = MountTree(
      chain: chain, writable: !options.readOnly, allowShrink: options.allowShrink,
      passthrough: options.passthrough, logger: logger)
    try self.init(source: source, owner: chain.top.file, options: options, logger: logger)
  }

  /// A mount of any tree (an appliance's); its nodes show the owner and times of `owner`.
  public init(source: any TreeSource, owner: ImageFile, options: MountOptions, logger: Logger) throws {
    guard options.threads >= 1 else {
      throw VDiskError(.invalidArgument, path: owner.path, "threads must be at least 1")
    }
    self.options = options
    self.logger = logger
    let tree = VirtualTree(source: source, metadata: Self.metadata(of: owner), logger: logger)
    context = FUSEContext(tree: tree, options: options, logger: logger)
    let passthrough = options.passthrough && cfuse_has_sys_admin() != 0
    if options.passthrough && !passthrough {
      logger.debug("passthrough: off (no CAP_SYS_ADMIN)")
    }
    if options.ioURing == .on, IOURingMode.kernelOffers() != true {
      throw VDiskError(
        .unsupported, path: options.fsname,
        IOURingMode.kernelOffers() == nil
          ? "io_uring=on: this kernel has no FUSE-over-io_uring (Linux 6.14+ built with CONFIG_FUSE_IO_URING)"
          : "io_uring=on: FUSE-over-io_uring is switched off (echo 1 > \(IOURingMode.parameterPath))")
    }
    connection = KernelConnection(
      settings: InitNegotiation.Settings(
        asyncDirectIO: context.asyncDirectIO, passthrough: passthrough, ioURing: options.ioURing != .off))

    // No operations: libfuse never processes a request of this session (KernelLoop does).
    var ops = fuse_lowlevel_ops()
    let made = Self.withArguments(options.arguments) { args in
      fuse_session_new(&args, &ops, MemoryLayout<fuse_lowlevel_ops>.size, nil)
    }
    guard let made else {
      throw VDiskError(
        .invalidArgument, path: options.fsname,
        "libfuse rejected the mount options \(options.arguments.dropFirst().joined(separator: " "))")
    }
    session = made
  }

  deinit {
    // Deferred replies and notices go out before the descriptors they go through are closed.
    context.invalidator.stop()
    let s = state.withLock { $0 }
    if s.notifyDevice >= 0 { context.backingFiles.closeAll(device: s.notifyDevice) }
    s.loop?.closeDevices()
    if s.notifyDevice >= 0 { close(s.notifyDevice) }
    if s.signalHandlers { cfuse_remove_exit_signals() }
    if s.mounted { fuse_session_unmount(session) }
    fuse_session_destroy(session)
  }

  /// Mounts at `mountpoint`, which must be an existing directory that is not a mount point yet.
  public func mount(at mountpoint: String) throws {
    try state.withLock { s in
      guard !s.mounted else {
        throw VDiskError(
          .invalidArgument, path: mountpoint, "session is already mounted at \(s.mountpoint ?? "?")")
      }
      let resolved = try MountPoint.validate(mountpoint)
      guard fuse_session_mount(session, resolved) == 0 else {
        throw VDiskError(.io, path: mountpoint, "cannot mount (see the libfuse message above)")
      }
      s.mounted = true
      s.mountpoint = resolved
      if let device = MountPoint.mountedDevice(at: resolved) {
        context.scheduleReadAhead(device: device)
      }
      logger.debug("mounted \(options.fsname) at \(resolved)")
    }
  }

  /// Makes SIGINT, SIGTERM and SIGHUP end `loop` (SIGPIPE is ignored). Installed whatever their
  /// current disposition: a daemon started with `&` by a non-interactive shell inherits SIGINT
  /// ignored.
  public func installSignalHandlers() throws {
    try state.withLock { s in
      guard !s.signalHandlers else { return }
      guard cfuse_install_exit_signals(control.wake) == 0 else {
        throw VDiskError(.io, path: options.fsname, "cannot install signal handlers")
      }
      s.signalHandlers = true
    }
  }

  /// Detaches from the terminal (`fuse_daemonize`): call after `mount` so the mount is live when
  /// the parent exits, and before any Dispatch or async use. The working directory becomes `/`
  /// and stdio /dev/null.
  public func daemonize() throws {
    guard fuse_daemonize(0) == 0 else {
      throw VDiskError(.io, path: options.fsname, "cannot daemonize")
    }
  }

  /// Serves requests on `options.threads` worker threads (one /dev/fuse clone each) until
  /// unmounted, `exit` is called, or a handled signal arrives. Returns 0, the signal number, or a
  /// negative errno (reading the device failed); throws when the kernel's FUSE protocol is older
  /// than vdiskfs serves. Call once.
  ///
  /// With signal handlers installed the calling thread unblocks SIGINT, SIGTERM and SIGHUP (a
  /// thread started from Dispatch, or `AfterFork`'s, inherits them blocked); the workers block them.
  public func loop() throws -> Int32 {
    let (mounted, handlers) = state.withLock { ($0.mounted, $0.signalHandlers) }
    guard mounted else {
      throw VDiskError(.invalidArgument, path: options.fsname, "loop() before mount(at:)")
    }
    let master = fuse_session_fd(session)
    let loop = KernelLoop(
      master: master, context: context, connection: connection, control: control, debug: options.debug,
      requireIOURing: options.ioURing == .on, logger: logger)
    let notify = fcntl(master, F_DUPFD_CLOEXEC, 0)
    try state.withLock { s in
      guard s.loop == nil else {
        if notify >= 0 { close(notify) }
        throw VDiskError(.invalidArgument, path: options.fsname, "loop() called twice")
      }
      s.loop = loop
      s.notifyDevice = notify
    }
    if notify >= 0 { context.invalidator.attach(device: notify) }
    let (reason, signal) = try loop.run(threads: options.threads, signals: handlers)
    let result: Int32
    switch reason {
    case .refused(let refusal):
      throw VDiskError(.unsupported, path: options.fsname, refusal.description)
    case .transportMissing(let why):
      throw VDiskError(.unsupported, path: options.fsname, why)
    case .failed(let code):
      result = -code
    case .exited, .unmounted, nil:
      result = signal
    }
    if let negotiated = connection.negotiated {
      let rings =
        loop.ringRequests.map {
          ", \($0) requests through io_uring, \(loop.ringWorkerCommits ?? 0) large replies from workers' rings"
        } ?? ""
      logger.debug(
        "session loop ended with \(result) (FUSE 7.\(negotiated.minor), flags 0x\(String(negotiated.flags, radix: 16))\(rings))"
      )
    }
    return result
  }

  /// Asks the loop to end; it returns once its workers have stopped.
  public func exit() {
    control.stop(.exited)
  }

  /// Checks that `path` exists, is a directory and is not already a mount point (what `mount(at:)`
  /// checks too), so that a caller can refuse a bad mount point before doing any work.
  public static func checkMountpoint(_ path: String) throws {
    _ = try MountPoint.validate(path)
  }

  /// Writes back everything written through writable views and syncs the images; call after
  /// `loop()` returns (SIGTERM, external unmount) and before `unmount()`.
  public func flush() throws {
    try context.tree.syncAll()
  }

  /// Unmounts (lazily when busy, as root). Idempotent; safe while `loop` runs on another thread.
  public func unmount() {
    state.withLock { s in
      guard s.mounted else { return }
      fuse_session_unmount(session)
      s.mounted = false
      logger.debug("unmounted \(s.mountpoint ?? "")")
    }
  }

  /// The resolved mount point while mounted.
  public var mountpoint: String? { state.withLock { $0.mounted ? $0.mountpoint : nil } }

  /// Owner and times of the tree: those of the top image file.
  private static func metadata(of file: ImageFile) -> NodeMetadata {
    guard let st = file.status() else { return NodeMetadata() }
    return NodeMetadata(
      uid: st.userID, gid: st.groupID, seconds: st.modificationSeconds,
      nanoseconds: st.modificationNanoseconds)
  }

  /// Calls `body` with a `fuse_args` over C copies of `arguments`, freed afterwards (and frees
  /// whatever argument vector libfuse made of them).
  private static func withArguments<R>(_ arguments: [String], _ body: (inout fuse_args) -> R) -> R {
    var cStrings: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
    defer { for p in cStrings { free(p) } }
    cStrings.append(nil)
    return cStrings.withUnsafeMutableBufferPointer { argv in
      var args = cfuse_args_init(Int32(arguments.count), argv.baseAddress)
      defer { fuse_opt_free_args(&args) }
      return body(&args)
    }
  }
}
