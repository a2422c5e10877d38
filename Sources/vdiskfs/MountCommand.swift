import Appliance
import ArgumentParser
import Foundation
import ImageFormats
import Logging
import RemoteStore
import RemoteStores
import VDiskCore
import VDiskFUSE

/// `vdiskfs [options] IMAGE MOUNTPOINT`: the default command; also what `mount -t fuse.vdiskfs`
/// and fstab run. Parses, opens the chain, mounts, serves until unmounted or signalled.
struct MountCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "mount",
    abstract:
      "Mount a disk image so that MOUNTPOINT/disk.raw shows its guest-visible bytes (the default command).",
    discussion: """
      Also runs as a mount helper: `mount -t fuse.vdiskfs IMAGE MOUNTPOINT -o ro`, or in /etc/fstab: \
      `/var/lib/vm/vm.qcow2 /mnt/vm fuse.vdiskfs ro,allow_other 0 0`.

      -o options: ro, rw (the default; writes go to the top image, never to a backing file), \
      force_share (with ro: read an image another program has open for writing), allow_shrink \
      (truncate may shrink the disk), allow_other, debug, format=FMT (\(FormatOption.names)), cache_size=SIZE, threads=N, \
      fsname=NAME, read_ahead_kb=N (default 3840; 0 keeps the kernel's), nosplice (copy read \
      replies instead of splicing the image's pages), passthrough=auto|off (auto, the default: \
      the kernel reads and writes a raw image's or monolithicFlat VMDK's disk.raw straight from \
      the host file when it can; needs Linux 6.9+ and CAP_SYS_ADMIN), io_uring=auto|on|off (auto, \
      the default: serve requests through FUSE-over-io_uring when the kernel offers it, which \
      needs Linux 6.14+ and /sys/module/fuse/parameters/enable_uring set to Y; on: fail without \
      it), backing_dir=DIR (every backing file and \
      extent file must resolve inside DIR), nobacking (open the top image alone: what it does not \
      hold reads as zeros; mounts read-only), and the mount flags nodev, nosuid, noexec, noatime \
      and their opposites.

      Remote images: IMAGE may be rbd:POOL[/NAMESPACE]/IMAGE[@SNAP] (Ceph RBD; CEPH_CONF or \
      ceph_conf=FILE, ceph_id=NAME; a snapshot is read-only, the image head read-write under RBD's \
      exclusive lock), s3://BUCKET/KEY (read-only; AWS_ENDPOINT_URL or s3_endpoint=URL, \
      s3_region=REGION, credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or \
      ~/.aws/credentials with AWS_PROFILE; without any, or with s3_unsigned, unsigned anonymous \
      requests) or https://… and http://… (read-only; the server must serve byte ranges; a query \
      string such as a presigned URL's is kept; sslverify=off skips TLS verification). --overlay \
      local.qcow2 gives a writable view of a read-only one. Backing and extent files resolve in the \
      image's own store. Options: remote_cache=SIZE (in-memory block cache, default 256M), \
      cache_dir=DIR (keep fetched blocks across mounts), connections=N (parallel requests, default \
      8), remote_timeout=SECONDS (connect and stall limit, default 10; a whole HTTP request gets \
      twice that plus its body at 4 KiB/s), remote_backing (a local image may name a remote backing \
      file). vdiskfs info and vdiskfs map take these and the other options about opening the image \
      (format, cache_size, backing_dir, nobacking) with -o too.

      Appliances: IMAGE may be an OVF appliance (an .ova, an .ovf, or a directory holding one); \
      it mounts read-only without unpacking: MOUNTPOINT shows the .ovf and \
      disks/<n>-<file>/disk.raw (with partitions/) for each disk; gzip-compressed disk files are \
      refused, and so are format=/--format and backing_dir= (exit 2: each disk's format is probed, \
      and a disk inside an appliance may not name other files). `vdiskfs verify` checks its .mf \
      manifest.

      Untrusted images: backing file names must be paths (no protocol prefix such as nbd: or \
      http://, no json:), every file must be a regular file or a block device, and a raw image \
      whose format was probed refuses (EPERM) writes that would make it probe as another format; \
      state --format raw to allow them. `vdiskfs info --backing-chain` shows every file a mount \
      would open.

      To stop: `fusermount3 -u MOUNTPOINT`, `umount MOUNTPOINT`, or SIGINT, SIGTERM or SIGHUP to the \
      vdiskfs process.

      \(ExitCodes.helpText)
      """)

  @Argument(
    help:
      "The disk image (\(FormatOption.names); its backing chain is opened too): a path, rbd:POOL[/NAMESPACE]/IMAGE[@SNAP], s3://BUCKET/KEY or an http(s) URL."
  )
  var image: String

  @Argument(help: "An empty directory to mount on.")
  var mountpoint: String

  @Option(
    name: .customShort("o"),
    help: ArgumentHelp("Mount options, comma-separated (see below).", valueName: "opts"))
  var options: [String] = []

  @Flag(name: .customShort("f"), help: "Stay in the foreground (default: daemonize once the mount is live).")
  var foreground = false

  @Flag(name: [.customShort("d"), .customLong("debug")], help: "Debug logging (implies -f).")
  var debug = false

  @Option(help: ArgumentHelp(FormatOption.help))
  var format: String?

  @Option(
    help: ArgumentHelp(
      "Metadata cache budget, e.g. 64M (default: what covers the whole image, at most 32M).",
      valueName: "size"))
  var cacheSize: String?

  @Option(help: "Maximum FUSE worker threads (default: 4).")
  var threads: Int?

  @Flag(
    name: .customLong("force-share"),
    help: "With -o ro: take no image locks (look at an image QEMU has open).")
  var forceShareFlag = false

  @Option(
    help: ArgumentHelp(
      "Mount OVERLAY (a qcow2 over IMAGE, created if missing) read-write instead of IMAGE; IMAGE is never written.",
      valueName: "overlay.qcow2"))
  var overlay: String?

  func run() throws {
    let parsed: ParsedMountOptions
    do {
      parsed = try MountOptionParser.parse(options)
    } catch {
      throw CLIFailure(code: ExitCodes.usage, message: error.description)
    }
    let debugging = debug || parsed.debug
    VDiskLogHandler.bootstrap(level: debugging ? .debug : .info)
    let logger = Logger(label: "vdiskfs")

    do {
      try FUSESession.checkMountpoint(mountpoint)
    } catch let error as VDiskError {
      throw CLIFailure(code: ExitCodes.mountpoint, message: error.description)
    }
    let readOnly = parsed.readOnly
    let forceShare = forceShareFlag || parsed.forceShare
    guard !forceShare || readOnly else {
      throw CLIFailure(
        code: ExitCodes.usage, message: "force_share needs a read-only mount (-o ro,force_share)")
    }
    let openOptions = try makeOpenOptions(parsed)
    parsed.opening.logWarnings(logger)
    var tree: ApplianceMount?
    if overlay == nil, !image.contains("://"), !image.hasPrefix("rbd:"), Appliance.recognizes(image) {
      try ApplianceOptions.check(image, openOptions)
      tree = try ApplianceMount(image, cacheSize: openOptions.cacheSize, logger: logger)
    }
    let opened: MountOpening.Opened
    if let tree {
      if !readOnly { logger.notice("\(image): an appliance mounts read-only") }
      opened = MountOpening.Opened(chain: tree.descriptor, writable: false)
    } else {
      do {
        var options = openOptions
        let target = try overlayTarget(options: openOptions, logger: logger) ?? image
        // The overlay names the base by its location: a remote base is what the user asked for.
        if overlay != nil, openOptions.stores.store(for: image) != nil { options.allowRemoteBacking = true }
        opened = try MountOpening.open(
          target, options: options, wantWrite: !readOnly, forceShare: forceShare, logger: logger)
      } catch let error as VDiskError {
        throw CLIFailure(code: ExitCodes.code(for: error), message: error.description)
      }
    }
    let chain = opened.chain

    var mountOptions = MountOptions()
    mountOptions.readOnly = !opened.writable
    mountOptions.allowShrink = parsed.allowShrink
    mountOptions.allowOther = parsed.allowOther
    mountOptions.debug = debugging
    if let t = threads ?? parsed.threads {
      guard (1...256).contains(t) else {
        throw CLIFailure(code: ExitCodes.usage, message: "--threads must be between 1 and 256")
      }
      mountOptions.threads = t
    }
    if let kilobytes = parsed.readAheadKilobytes {
      mountOptions.readAheadKilobytes = kilobytes == 0 ? nil : kilobytes
    }
    mountOptions.splice = !parsed.noSplice
    mountOptions.passthrough = parsed.passthrough
    mountOptions.ioURing = parsed.ioURing
    // A URL's query string stays out of /proc/mounts: a presigned URL's signature is a secret.
    let top = tree?.path ?? chain.top.file.path
    mountOptions.fsname =
      parsed.fsname
      ?? (top.hasPrefix("http://") || top.hasPrefix("https://") ? RemoteLocation.withoutQuery(top) : top)
    mountOptions.libfuseOptions = parsed.passThrough

    installFUSELogRouting(logger)
    let session: FUSESession
    do {
      if let tree {
        session = try FUSESession(
          source: tree.source, owner: tree.owner, options: mountOptions, logger: logger)
      } else {
        session = try FUSESession(chain: chain, options: mountOptions, logger: logger)
      }
      try session.installSignalHandlers()
    } catch let error as VDiskError {
      throw CLIFailure(code: ExitCodes.fuse, message: error.description)
    }
    do {
      try session.mount(at: mountpoint)
    } catch let error as VDiskError {
      let code =
        error.kind == .invalidArgument || error.kind == .notFound ? ExitCodes.mountpoint : ExitCodes.fuse
      throw CLIFailure(code: code, message: error.description)
    }
    let daemonizing = !(foreground || debugging)
    guard daemonizing else {
      return try serve(
        session, chain: chain, writable: opened.writable, daemonized: false,
        remoteConnections: parsed.opening.remote.connections, readyFile: tree?.descriptorName ?? "disk.raw",
        logger: logger)
    }
    VDiskLogHandler.switchToSyslog()
    openOptions.stores.prepareForFork()
    do {
      try session.daemonize()
    } catch {
      session.unmount()
      throw CLIFailure(code: ExitCodes.fuse, message: "cannot daemonize: \(error)")
    }
    // The forked main thread locks with its parent's thread id (AfterFork says why): serve from a
    // thread of the daemon's own.
    try AfterFork.run {
      try serve(
        session, chain: chain, writable: opened.writable, daemonized: true,
        remoteConnections: parsed.opening.remote.connections, readyFile: tree?.descriptorName ?? "disk.raw",
        logger: logger)
    }
  }

  /// Serves the mounted session until it is unmounted or signalled, then writes back and unmounts.
  private func serve(
    _ session: FUSESession, chain: LayerChain, writable: Bool, daemonized: Bool, remoteConnections: Int,
    readyFile: String, logger: Logger
  ) throws {
    // Remote images prefetch on threads of their own, started here: after the fork, if any.
    FetchWorkers.shared.start(threads: remoteConnections)
    // Under systemd (Type=notify): READY=1 once disk.raw reads, STOPPING=1 when the loop ends.
    let notifier = SystemdNotify.fromEnvironment()
    let served = session.mountpoint ?? mountpoint
    notifier?.announceReadyWhenServing(
      diskRaw: served + "/" + readyFile,
      status: SystemdNotify.servingStatus(
        image: chain.top.file.path, format: chain.top.formatName, readOnly: !writable,
        mountpoint: served),
      mainPID: daemonized ? getpid() : nil, logger: logger)
    var loopError: (any Error)?
    do {
      // Returns on unmount or on SIGINT/SIGTERM/SIGHUP (the session logs which).
      _ = try session.loop()
    } catch {
      loopError = error
    }
    notifier?.send(["STOPPING=1", "STATUS=Writing back \(chain.top.file.path) and unmounting \(served)"])
    // Everything written goes to disk before the mount goes away (SIGTERM, fusermount3 -u).
    var flushError: (any Error)?
    do {
      try session.flush()
    } catch {
      flushError = error
      logger.error("writing back \(chain.top.file.path) failed: \(error)")
    }
    session.unmount()
    if let error = loopError ?? flushError {
      throw CLIFailure(code: ExitCodes.failure, message: "\(error)")
    }
  }

  /// With `--overlay`: creates the overlay over IMAGE if missing and returns its path.
  private func overlayTarget(options: OpenOptions, logger: Logger) throws -> String? {
    guard let overlay else { return nil }
    try Overlay.prepare(overlay, over: image, options: options, logger: logger)
    return overlay
  }

  private func makeOpenOptions(_ parsed: ParsedMountOptions) throws -> OpenOptions {
    try parsed.opening.openOptions(format: format, cacheSize: cacheSize)
  }
}

/// A failure the CLI reports as `vdiskfs: <message>` and exits with `code`.
struct CLIFailure: Error {
  var code: Int32
  var message: String
}
