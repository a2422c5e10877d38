import CFuse

/// The answer to the kernel's INIT: which protocol version and features the connection uses.
///
/// The features are exactly those libfuse 3.14 negotiated for vdiskfs before it answered INIT
/// itself (read from libfuse's `-d` trace of a 6.18 kernel offering 0x73fffffb): asynchronous
/// reads, atomic O_TRUNC, big writes, automatic invalidation of cached data on a changed mtime,
/// `max_pages`, and the extended INIT flags — plus asynchronous direct I/O on a read-only mount
/// only (`FUSEContext.asyncDirectIO` says why). 0x40401029 read-write, 0x40409029 read-only.
/// Nothing new (parallel dirops, readdirplus, …) without a test that needs it — except
/// `FUSE_PASSTHROUGH` (7.40), taken when the mount asks for it (`-o passthrough=auto` and
/// CAP_SYS_ADMIN), the kernel offers it and the answer is 7.40 or later: then `max_stack_depth`
/// is 1 (backing files are plain files of a non-stacked file system) and FUSE_WRITEBACK_CACHE,
/// which the kernel refuses passthrough with, is never asked for. And `FUSE_OVER_IO_URING` (7.42),
/// taken when the mount allows it (`-o io_uring=auto|on`) and the kernel offers it (only while
/// /sys/module/fuse/parameters/enable_uring is Y): `RingQueues` then registers its queues.
enum InitNegotiation {
  /// What the mount asks for.
  struct Settings: Equatable {
    /// Keep `FUSE_ASYNC_DIO` (read-only mounts).
    var asyncDirectIO: Bool
    /// The largest write the kernel may send (the request buffer is this plus a header page).
    var maxWrite: UInt32 = 1 << 20
    /// Ask for FUSE passthrough (`-o passthrough=auto` in a process with CAP_SYS_ADMIN).
    var passthrough: Bool = false
    /// Take FUSE-over-io_uring when offered (`-o io_uring=auto|on`).
    var ioURing: Bool = false
  }

  /// The stack depth announced with FUSE_PASSTHROUGH: a backing file on a normal file system.
  static let passthroughStackDepth: UInt32 = 1

  /// Why a kernel was refused.
  struct Refusal: Error, Equatable, CustomStringConvertible {
    let major: UInt32
    let minor: UInt32
    var description: String {
      "the kernel speaks FUSE protocol \(major).\(minor); vdiskfs needs "
        + "\(CFUSE_PROTOCOL_MAJOR).\(CFUSE_PROTOCOL_MINOR_OLDEST) or later"
    }
  }

  /// The kernel's INIT flags, `flags2` included as the high 32 bits when it set FUSE_INIT_EXT.
  static func offeredFlags(_ request: fuse_init_in) -> UInt64 {
    var flags = UInt64(request.flags)
    if flags & UInt64(FUSE_INIT_EXT) != 0 { flags |= UInt64(request.flags2) << 32 }
    return flags
  }

  /// The features vdiskfs takes when offered.
  static func wantedFlags(_ settings: Settings) -> UInt64 {
    var wanted = [
      FUSE_ASYNC_READ, FUSE_ATOMIC_O_TRUNC, FUSE_BIG_WRITES, FUSE_AUTO_INVAL_DATA, FUSE_MAX_PAGES,
    ]
    if settings.asyncDirectIO { wanted.append(FUSE_ASYNC_DIO) }
    return wanted.reduce(UInt64(0)) { $0 | UInt64($1) }
  }

  /// The INIT reply for `request`: min(kernel's minor, 7.42), the wanted features the kernel
  /// offers, and the sizes; a `Refusal` for a kernel older than 7.31 or of another major version.
  static func reply(to request: fuse_init_in, settings: Settings, pageSize: UInt32 = 4096) -> Result<
    fuse_init_out, Refusal
  > {
    guard request.major == CFUSE_PROTOCOL_MAJOR, request.minor >= CFUSE_PROTOCOL_MINOR_OLDEST else {
      return .failure(Refusal(major: request.major, minor: request.minor))
    }
    let offered = offeredFlags(request)
    var flags = offered & wantedFlags(settings)
    // libfuse always sets big writes (superseded by max_write) and, when the kernel sends the
    // extended flags, answers with them too.
    flags |= UInt64(FUSE_BIG_WRITES)
    if offered & UInt64(FUSE_INIT_EXT) != 0 { flags |= UInt64(FUSE_INIT_EXT) }
    let minor = min(request.minor, CFUSE_PROTOCOL_MINOR)
    let passthrough =
      settings.passthrough && minor >= 40 && offered & UInt64(FUSE_INIT_EXT) != 0
      && offered & FUSE_PASSTHROUGH != 0
    // The kernel turns passthrough off when writeback caching comes with it; it never does here.
    flags &= ~UInt64(FUSE_WRITEBACK_CACHE)
    if passthrough { flags |= FUSE_PASSTHROUGH }
    if settings.ioURing && minor >= 42 && offered & UInt64(FUSE_INIT_EXT) != 0
      && offered & FUSE_OVER_IO_URING != 0
    {
      flags |= FUSE_OVER_IO_URING
    }
    var out = fuse_init_out()
    out.major = CFUSE_PROTOCOL_MAJOR
    out.minor = minor
    out.max_readahead = request.max_readahead
    out.flags = UInt32(truncatingIfNeeded: flags)
    out.flags2 = UInt32(truncatingIfNeeded: flags >> 32)
    // 0: the kernel keeps its defaults (libfuse sent 0 too).
    out.max_background = 0
    out.congestion_threshold = 0
    out.max_write = settings.maxWrite
    out.time_gran = 1
    if flags & UInt64(FUSE_MAX_PAGES) != 0 {
      let pages = (settings.maxWrite - 1) / max(pageSize, 1) + 1
      out.max_pages = UInt16(clamping: pages)
    }
    if passthrough { cfuse_init_out_set_max_stack_depth(&out, passthroughStackDepth) }
    return .success(out)
  }
}
