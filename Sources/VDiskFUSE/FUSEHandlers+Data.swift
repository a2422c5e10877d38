import CFuse
import CLinux
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

// File data: open, read, write, fallocate, fsync, flush, release, lseek.

/// Every open keeps the file's cached pages (`keep_cache`): read-only views never change, and
/// read-write ones drop exactly what each change makes stale (`FUSEContext.changed`).
///
/// Direct I/O (`FOPEN_DIRECT_IO`) for O_DIRECT opens (fio, databases, qemu with cache=none), and
/// writers parallel writes: without FOPEN_PARALLEL_DIRECT_WRITES the kernel holds the inode lock
/// across each direct write, so 4 writers run one at a time (libfuse 3.14 had no field for that
/// bit; the reply is the kernel's `fuse_open_out`, built here). On a read-only view FOPEN_DIRECT_IO only takes the
/// kernel's synchronous read path instead of its async-DIO one: fio 4 KiB random read, 4 jobs,
/// vhdx, medians of 5: 229 k -> 240 k IOPS. Writers of a partition of a writable disk get
/// direct I/O too: only disk.raw itself takes page-cache writes (`PageCacheRegistry`).
func fuseOpen(_ req: FUSERequest, _ ctx: FUSEContext, _ ino: UInt64, flags: Int32) {
  handle(req, ctx) {
    let view = try ctx.tree.open(ino, flags: flags)
    let writes = flags & O_ACCMODE != O_RDONLY
    if let backing = ctx.backingFiles.backingID(for: ino, view: view, device: req.device, logger: ctx.logger)
    {
      replyPassthroughOpen(req, ctx, view, backing: backing, writes: writes)
      return
    }
    let direct =
      flags & clinux_o_direct != 0 || view.uncached
      || (view.writable && writes && !PageCacheRegistry.allowsPageCacheWrites(view))
    // A cached open of a view that can change is counted before it is answered.
    let tracked = !direct && view.writable
    if tracked { ctx.pageCache.opened(ino, view: view) }
    let handle = OpenFile.handle(for: view, direct: direct, cachedInode: tracked ? ino : nil)
    // Nothing to write back on close of a descriptor that cannot write (a read-only view, or a
    // read-only open of a writable one): no FLUSH request, no sync.
    let noflush = !(view.writable && writes)
    var bits: Int32 = ctx.keepCache ? FOPEN_KEEP_CACHE : 0
    if direct {
      // KEEP_CACHE too: without it the kernel would drop the file's pages at this open.
      bits |= FOPEN_DIRECT_IO
      if view.writable { bits |= FOPEN_PARALLEL_DIRECT_WRITES }
    }
    if noflush { bits |= FOPEN_NOFLUSH }
    var out = fuse_open_out()
    out.fh = handle
    out.open_flags = UInt32(bitPattern: bits)
    if req.reply(out) != 0 {
      // The kernel never saw the open (interrupted): no release will come for this handle.
      OpenFile.release(handle: handle, pageCache: ctx.pageCache)
    }
  }
}

/// OPEN of a passed-through view: reads, writes, splice and mmap of this open file go from the
/// kernel to the host file, never here (FOPEN_DIRECT_IO would override that, and the kernel
/// refuses FOPEN_KEEP_CACHE with it; O_DIRECT reaches the host file, which the kernel reopens
/// with this open's flags). No page-cache tracking: the FUSE inode caches nothing of its own,
/// and the host file's page cache is the one the daemon's own writes go through.
private func replyPassthroughOpen(
  _ req: FUSERequest, _ ctx: FUSEContext, _ view: DiskView, backing: Int32, writes: Bool
) {
  let handle = OpenFile.handle(for: view, direct: false, cachedInode: nil)
  var out = cfuse_open_out()
  out.fh = handle
  out.open_flags = UInt32(bitPattern: FOPEN_PASSTHROUGH | (view.writable && writes ? 0 : FOPEN_NOFLUSH))
  out.backing_id = backing
  if req.reply(out) != 0 {
    OpenFile.release(handle: handle, pageCache: ctx.pageCache)
  }
}

/// The hottest handler: like the context, the open file is borrowed and its `DiskView` never
/// copied. 4 KiB reads, vhdx: 8 retains a request -> 1 (the view's content).
func fuseRead(
  _ req: FUSERequest, _ ctx: FUSEContext, _ pipe: SplicePipe?, _ ino: UInt64, _ arguments: fuse_read_in
) {
  handle(req, ctx) {
    let size = Int(arguments.size)
    let offset = arguments.offset
    guard offset <= UInt64(Int64.max) else { throw FileSystemError(EINVAL) }
    if let open = UnsafeRawPointer(bitPattern: UInt(arguments.fh)) {
      try Unmanaged<OpenFile>.fromOpaque(open)._withUnsafeGuaranteedRef { file in
        try replyRead(req, ctx, pipe, file.view.content, size, offset)
      }
    } else {
      try replyRead(req, ctx, pipe, ctx.tree.fileView(ino).content, size, offset)
    }
  }
}

/// Answered once the pages that show the written bytes elsewhere are dropped. A write through
/// the page cache leaves the kernel's own pages of this inode right (it holds them locked until
/// this reply); a direct-I/O write does not. `data` is the payload in the request buffer, its
/// length already checked against the request's (`KernelDispatch`).
func fuseWrite(
  _ req: FUSERequest, _ ctx: FUSEContext, _ ino: UInt64, _ arguments: fuse_write_in,
  _ data: UnsafeRawBufferPointer
) {
  handle(req, ctx) {
    let start = arguments.offset
    guard start <= UInt64(Int64.max) else { throw FileSystemError(EINVAL) }
    let open = OpenFile.from(handle: arguments.fh)
    let view = try open?.view ?? ctx.tree.checkWritable(ino)
    let (requestedEnd, overflow) = start.addingReportingOverflow(UInt64(data.count))
    let keepsOwn = open?.direct != true
    if arguments.write_flags & UInt32(FUSE_WRITE_CACHE) != 0 {
      // Writeback of mmap'd pages: a background request, answered at once (see CacheInvalidator).
      let written: Int
      do {
        written = try ctx.tree.write(view: view, data, at: start)
      } catch {
        ctx.changed(
          view, start..<(overflow ? UInt64.max : requestedEnd), through: ino, kernelKeepsOwnPages: true)
        throw error
      }
      req.reply(fuse_write_out(size: UInt32(written), padding: 0))
      ctx.changed(view, start..<start + UInt64(written), through: ino, kernelKeepsOwnPages: true)
      return
    }
    do {
      let written = try ctx.tree.write(view: view, data, at: start)
      ctx.changed(view, start..<start + UInt64(written), through: ino, kernelKeepsOwnPages: keepsOwn) {
        req.reply(fuse_write_out(size: UInt32(written), padding: 0))
      }
    } catch {
      // Part of it may have been written.
      let code = errnoValue(for: error, logger: ctx.logger, limiter: ctx.errorLimiter)
      let end = overflow ? UInt64.max : requestedEnd
      ctx.changed(view, start..<end, through: ino, kernelKeepsOwnPages: keepsOwn) {
        req.replyError(code)
      }
    }
  }
}

/// PUNCH_HOLE (with KEEP_SIZE), ZERO_RANGE and plain reservations (`VirtualTree.fallocate`);
/// the kernel drops this inode's pages of the range itself, the other files that show it are
/// told before the answer.
func fuseFallocate(_ req: FUSERequest, _ ctx: FUSEContext, _ ino: UInt64, _ arguments: fuse_fallocate_in) {
  handle(req, ctx) {
    let start = arguments.offset
    let length = arguments.length
    guard start <= UInt64(Int64.max), length <= UInt64(Int64.max) else { throw FileSystemError(EINVAL) }
    let request = try allocateRequest(Int32(bitPattern: arguments.mode))
    let view = try ctx.tree.checkWritable(ino)
    let (end, overflow) = start.addingReportingOverflow(length)
    guard !overflow else { throw FileSystemError(EINVAL) }
    var code: Int32 = 0
    do {
      try ctx.tree.fallocate(ino, request, offset: start, length: length)
      if case .reserve = request {
        req.replyError(0)
        return
      }
    } catch {
      code = errnoValue(for: error, logger: ctx.logger, limiter: ctx.errorLimiter)
    }
    let answer = code
    ctx.changed(view, start..<end, through: ino, kernelKeepsOwnPages: true) {
      req.replyError(answer)
    }
  }
}

/// fallocate(2)'s mode bits as a request; EOPNOTSUPP for the modes vdiskfs does not do
/// (COLLAPSE_RANGE, INSERT_RANGE, UNSHARE_RANGE, a hole without KEEP_SIZE, …).
func allocateRequest(_ mode: Int32) throws -> VirtualTree.AllocateRequest {
  let keepSize = mode & clinux_falloc_fl_keep_size != 0
  switch mode & ~clinux_falloc_fl_keep_size {
  case clinux_falloc_fl_punch_hole where keepSize: return .punchHole
  case clinux_falloc_fl_zero_range: return .zeroRange(keepSize: keepSize)
  case 0: return .reserve(keepSize: keepSize)
  default: throw FileSystemError(EOPNOTSUPP)
  }
}

func fuseFsync(_ req: FUSERequest, _ ctx: FUSEContext, _ ino: UInt64) {
  handle(req, ctx) {
    try ctx.tree.sync(ino)
    req.replyError(0)
  }
}

/// close(2) of a handle (each one; release comes after the last).
func fuseFlush(_ req: FUSERequest, _ ctx: FUSEContext, _ ino: UInt64) {
  handle(req, ctx) {
    try ctx.tree.sync(ino)
    req.replyError(0)
  }
}

func fuseRelease(_ req: FUSERequest, _ ctx: FUSEContext, _ ino: UInt64, handle fh: UInt64) {
  handle(req, ctx) {
    OpenFile.release(handle: fh, pageCache: ctx.pageCache)
    req.replyError(0)
  }
}

/// The kernel answers SEEK_SET/CUR/END itself and asks only for SEEK_DATA/SEEK_HOLE.
func fuseLseek(_ req: FUSERequest, _ ctx: FUSEContext, _ ino: UInt64, _ arguments: fuse_lseek_in) {
  handle(req, ctx) {
    let kind: VirtualTree.SeekKind
    switch Int32(bitPattern: arguments.whence) {
    case clinux_seek_data: kind = .data
    case clinux_seek_hole: kind = .hole
    default: throw FileSystemError(EINVAL)
    }
    guard arguments.offset <= UInt64(Int64.max) else { throw FileSystemError(ENXIO) }
    let answer = try ctx.tree.seek(ino, from: arguments.offset, to: kind)
    req.reply(fuse_lseek_out(offset: answer))
  }
}
