import CFuse
import Logging
import Synchronization
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// One libfuse low-level session serving a `VirtualTree` of a chain; owns the C session and
/// frees it in `deinit`.
///
/// Lifecycle, as libfuse's hello_ll: `init` (fuse_session_new) → `installSignalHandlers` →
/// `mount(at:)` → `daemonize` (optional) → `loop` → `unmount` → deinit (fuse_session_destroy,
/// userdata released). `exit` and `unmount` may be called from another thread while `loop` runs;
/// `loop` returns once the session is unmounted (by `unmount`, `fusermount3 -u` or `umount`) or
/// a handled signal arrives.
public final class FUSESession: @unchecked Sendable {
  // @unchecked: `session` and `userdata` are set once in init and freed in deinit; the mutable
  // state lives in `state` under a mutex; libfuse's session calls are thread-safe for the uses
  // here (exit sets a flag, unmount is serialized by `state`).
  private let session: OpaquePointer
  private let userdata: UnsafeMutableRawPointer
  private let context: FUSEContext
  private let options: MountOptions
  private let logger: Logger

  private struct State {
    var mountpoint: String?
    var mounted = false
    var signalHandlers = false
  }
  private let state = Mutex(State())

  public init(chain: LayerChain, options: MountOptions, logger: Logger) throws {
    guard options.threads >= 1 else {
      throw VDiskError(.invalidArgument, path: chain.top.file.path, "threads must be at least 1")
    }
    self.options = options
    self.logger = logger
    let source = MountTree(
      chain: chain, writable: !options.readOnly, allowShrink: options.allowShrink, logger: logger)
    let tree = VirtualTree(source: source, metadata: Self.metadata(of: chain.top.file), logger: logger)
    context = FUSEContext(tree: tree, options: options, logger: logger)
    let retained = retainUserdata(context)
    userdata = retained

    var ops = makeOperations()
    let made = Self.withArguments(options.arguments) { args in
      fuse_session_new(&args, &ops, MemoryLayout<fuse_lowlevel_ops>.size, retained)
    }
    guard let made else {
      releaseUserdata(retained)
      throw VDiskError(
        .invalidArgument, path: options.fsname,
        "libfuse rejected the mount options \(options.arguments.dropFirst().joined(separator: " "))")
    }
    session = made
    context.attach(session: made)
  }

  deinit {
    // Deferred replies go out before the session they reply through is freed.
    context.invalidator.stop()
    let s = state.withLock { $0 }
    if s.signalHandlers { fuse_remove_signal_handlers(session) }
    if s.mounted { fuse_session_unmount(session) }
    fuse_session_destroy(session)
    releaseUserdata(userdata)
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

  /// Makes SIGINT, SIGTERM and SIGHUP end `loop` (SIGPIPE is ignored). They are reset to their
  /// defaults first: a daemon started with `&` by a non-interactive shell inherits SIGINT ignored,
  /// and libfuse installs no handler over an ignored signal.
  public func installSignalHandlers() throws {
    try state.withLock { s in
      guard !s.signalHandlers else { return }
      for sig in Self.exitSignals { signal(sig, SIG_DFL) }
      guard fuse_set_signal_handlers(session) == 0 else {
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

  private static let exitSignals = [SIGINT, SIGTERM, SIGHUP]

  /// Serves requests on up to `options.threads` threads (one /dev/fuse clone per thread) until
  /// unmounted or a handled signal arrives. Returns 0, the signal number, or a negative errno.
  ///
  /// The loop wakes on a signal only when the signal interrupts the calling thread (libfuse's
  /// workers block them), so with signal handlers installed the calling thread unblocks SIGINT,
  /// SIGTERM and SIGHUP: a thread started from Dispatch inherits them blocked.
  public func loop() throws -> Int32 {
    let (mounted, handlers) = state.withLock { ($0.mounted, $0.signalHandlers) }
    guard mounted else {
      throw VDiskError(.invalidArgument, path: options.fsname, "loop() before mount(at:)")
    }
    if handlers {
      var set = sigset_t()
      sigemptyset(&set)
      for sig in Self.exitSignals { sigaddset(&set, sig) }
      pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }
    #if VDISKFS_TSAN
      // ThreadSanitizer cannot follow how libfuse's multithreaded loop ends (TSanSessionLoop).
      let result = TSanSessionLoop.run(session, threads: options.threads)
    #else
      guard let config = fuse_loop_cfg_create() else {
        throw VDiskError(.io, path: options.fsname, "cannot create the loop configuration")
      }
      defer { fuse_loop_cfg_destroy(config) }
      fuse_loop_cfg_set_max_threads(config, UInt32(clamping: options.threads))
      fuse_loop_cfg_set_clone_fd(config, 1)
      let result = fuse_session_loop_mt(session, config)
    #endif
    logger.debug("session loop ended with \(result)")
    return result
  }

  /// Asks the loop to end (`fuse_session_exit`). The loop notices at its next request or signal;
  /// `unmount` makes it return at once.
  public func exit() {
    fuse_session_exit(session)
  }

  /// Unmounts (lazily when busy, as root). Idempotent; safe while `loop` runs on another thread.
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
