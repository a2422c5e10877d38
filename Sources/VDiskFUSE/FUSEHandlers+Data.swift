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
/// across each direct write, so 4 writers run one at a time. libfuse 3.14 has no field for that
/// bit, so the open reply is built here. On a read-only view FOPEN_DIRECT_IO only takes the
/// kernel's synchronous read path instead of its async-DIO one: fio 4 KiB random read, 4 jobs,
/// vhdx, medians of 5: 229 k -> 240 k IOPS. Writers of a partition of a writable disk get
/// direct I/O too: only disk.raw itself takes page-cache writes (`PageCacheRegistry`).
func fuseOpen(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
  handle(req) { ctx in
    guard let fi else { throw FileSystemError(EINVAL) }
    let flags = fi.pointee.flags
    let view = try ctx.tree.open(ino, flags: flags)
    let writes = flags & O_ACCMODE != O_RDONLY
    let direct =
      flags & clinux_o_direct != 0
      || (view.writable && writes && !PageCacheRegistry.allowsPageCacheWrites(view))
    // A cached open of a view that can change is counted before it is answered.
    let tracked = !direct && view.writable
    if tracked { ctx.pageCache.opened(ino, view: view) }
    let handle = OpenFile.handle(for: view, direct: direct, cachedInode: tracked ? ino : nil)
    // Nothing to write back on close of a descriptor that cannot write (a read-only view, or a
    // read-only open of a writable one): no FLUSH request, no sync.
    let noflush = !(view.writable && writes)
    let sent: Int32
    if direct {
      // KEEP_CACHE as below: without it the kernel would drop the file's pages at this open.
      var bits = CFUSE_FOPEN_DIRECT_IO | (ctx.keepCache ? CFUSE_FOPEN_KEEP_CACHE : 0)
      if view.writable { bits |= CFUSE_FOPEN_PARALLEL_DIRECT_WRITES }
      if noflush { bits |= CFUSE_FOPEN_NOFLUSH }
      sent = cfuse_reply_open_flags(req, handle, bits)
    } else {
      fi.pointee.fh = handle
      fi.pointee.keep_cache = ctx.keepCache ? 1 : 0
      fi.pointee.noflush = noflush ? 1 : 0
      sent = fuse_reply_open(req, fi)
    }
    if sent != 0 {
      // The kernel never saw the open (interrupted): no release will come for this handle.
      OpenFile.release(handle: handle, pageCache: ctx.pageCache)
    }
  }
}

/// The hottest handler: like the context, the open file is borrowed and its `DiskView` never
/// copied. 4 KiB reads, vhdx: 8 retains a request -> 1 (the view's content).
func fuseRead(
  _ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int, _ offset: off_t,
  _ fi: UnsafeMutablePointer<fuse_file_info>?
) {
  handle(req) { ctx in
    guard offset >= 0 else { throw FileSystemError(EINVAL) }
    if let open = UnsafeRawPointer(bitPattern: UInt(fi?.pointee.fh ?? 0)) {
      try Unmanaged<OpenFile>.fromOpaque(open)._withUnsafeGuaranteedRef { file in
        try replyRead(req, ctx, file.view.content, size, UInt64(offset))
      }
    } else {
      try replyRead(req, ctx, ctx.tree.fileView(ino).content, size, UInt64(offset))
    }
  }
}

/// Answered once the pages that show the written bytes elsewhere are dropped. A write through
/// the page cache leaves the kernel's own pages of this inode right (it holds them locked until
/// this reply); a direct-I/O write does not.
func fuseWrite(
  _ req: fuse_req_t?, _ ino: fuse_ino_t, _ buf: UnsafePointer<CChar>?, _ size: Int, _ offset: off_t,
  _ fi: UnsafeMutablePointer<fuse_file_info>?
) {
  handle(req) { ctx in
    guard offset >= 0 else { throw FileSystemError(EINVAL) }
    let open = OpenFile.from(handle: fi?.pointee.fh ?? 0)
    let view = try open?.view ?? ctx.tree.checkWritable(ino)
    let pending = PendingRequest(req)
    let start = UInt64(offset)
    let (requestedEnd, overflow) = start.addingReportingOverflow(UInt64(size))
    let keepsOwn = open?.direct != true
    if fi?.pointee.writepage != 0 {
      // Writeback of mmap'd pages: a background request, answered at once (see CacheInvalidator).
      let written: Int
      do {
        written = try ctx.tree.write(view: view, UnsafeRawBufferPointer(start: buf, count: size), at: start)
      } catch {
        ctx.changed(
          view, start..<(overflow ? UInt64.max : requestedEnd), through: ino, kernelKeepsOwnPages: true)
        throw error
      }
      fuse_reply_write(req, written)
      ctx.changed(view, start..<start + UInt64(written), through: ino, kernelKeepsOwnPages: true)
      return
    }
    do {
      let written = try ctx.tree.write(view: view, UnsafeRawBufferPointer(start: buf, count: size), at: start)
      ctx.changed(view, start..<start + UInt64(written), through: ino, kernelKeepsOwnPages: keepsOwn) {
        fuse_reply_write(pending.req, written)
      }
    } catch {
      // Part of it may have been written.
      let code = errnoValue(for: error, logger: ctx.logger, limiter: ctx.errorLimiter)
      let end = overflow ? UInt64.max : requestedEnd
      ctx.changed(view, start..<end, through: ino, kernelKeepsOwnPages: keepsOwn) {
        fuse_reply_err(pending.req, code)
      }
    }
  }
}

/// PUNCH_HOLE (with KEEP_SIZE), ZERO_RANGE and plain reservations (`VirtualTree.fallocate`);
/// the kernel drops this inode's pages of the range itself, the other files that show it are
/// told before the answer.
func fuseFallocate(
  _ req: fuse_req_t?, _ ino: fuse_ino_t, _ mode: Int32, _ offset: off_t, _ length: off_t,
  _ fi: UnsafeMutablePointer<fuse_file_info>?
) {
  handle(req) { ctx in
    guard offset >= 0, length >= 0 else { throw FileSystemError(EINVAL) }
    let request = try allocateRequest(mode)
    let view = try ctx.tree.checkWritable(ino)
    let start = UInt64(offset)
    let (end, overflow) = start.addingReportingOverflow(UInt64(length))
    guard !overflow else { throw FileSystemError(EINVAL) }
    let pending = PendingRequest(req)
    var code: Int32 = 0
    do {
      try ctx.tree.fallocate(ino, request, offset: start, length: UInt64(length))
      if case .reserve = request {
        fuse_reply_err(req, 0)
        return
      }
    } catch {
      code = errnoValue(for: error, logger: ctx.logger, limiter: ctx.errorLimiter)
    }
    let answer = code
    ctx.changed(view, start..<end, through: ino, kernelKeepsOwnPages: true) {
      fuse_reply_err(pending.req, answer)
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

func fuseFsync(
  _ req: fuse_req_t?, _ ino: fuse_ino_t, _ datasync: Int32, _ fi: UnsafeMutablePointer<fuse_file_info>?
) {
  handle(req) { ctx in
    try ctx.tree.sync(ino)
    fuse_reply_err(req, 0)
  }
}

/// close(2) of a handle (each one; release comes after the last).
func fuseFlush(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
  handle(req) { ctx in
    try ctx.tree.sync(ino)
    fuse_reply_err(req, 0)
  }
}

func fuseRelease(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
  handle(req) { ctx in
    if let fi { OpenFile.release(handle: fi.pointee.fh, pageCache: ctx.pageCache) }
    fuse_reply_err(req, 0)
  }
}

/// The kernel answers SEEK_SET/CUR/END itself and asks only for SEEK_DATA/SEEK_HOLE.
func fuseLseek(
  _ req: fuse_req_t?, _ ino: fuse_ino_t, _ offset: off_t, _ whence: Int32,
  _ fi: UnsafeMutablePointer<fuse_file_info>?
) {
  handle(req) { ctx in
    let kind: VirtualTree.SeekKind
    switch whence {
    case clinux_seek_data: kind = .data
    case clinux_seek_hole: kind = .hole
    default: throw FileSystemError(EINVAL)
    }
    guard offset >= 0 else { throw FileSystemError(ENXIO) }
    let answer = try ctx.tree.seek(ino, from: UInt64(offset), to: kind)
    fuse_reply_lseek(req, off_t(answer))
  }
}
