import CFuse
import Logging
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

// The operations table libfuse calls on its worker threads, and the only code that turns libfuse's
// userdata back into a `FUSEContext`. The handlers are named functions (`fuseRead`, …; a C function
// pointer cannot be formed from a static method), one file per group (+Attributes, +Data, +Directories); each asks the context's `VirtualTree`, then
// replies exactly once; every error goes through `errnoValue(for:logger:)`.

/// Hands `context` to C with a +1 retain, balanced by `releaseUserdata` once the session is
/// destroyed.
func retainUserdata(_ context: FUSEContext) -> UnsafeMutableRawPointer {
  Unmanaged.passRetained(context).toOpaque()
}

func releaseUserdata(_ userdata: UnsafeMutableRawPointer) {
  Unmanaged<FUSEContext>.fromOpaque(userdata).release()
}

/// Runs `body` with the request's context; a missing context (never expected) answers EIO.
/// The context is borrowed, not retained: it lives until the session is destroyed, and every
/// retain is an atomic on a cache line all workers share (on the read path that mattered).
@inline(__always)
func handle(_ req: fuse_req_t?, _ body: (FUSEContext) throws -> Void) {
  guard let req, let userdata = fuse_req_userdata(req) else {
    fuse_reply_err(req, EIO)
    return
  }
  Unmanaged<FUSEContext>.fromOpaque(userdata)._withUnsafeGuaranteedRef { ctx in
    ctx.requestArrived()
    do {
      try body(ctx)
    } catch {
      fuse_reply_err(req, errnoValue(for: error, logger: ctx.logger, limiter: ctx.errorLimiter))
    }
  }
}

/// The `struct stat` for tree attributes (shared by lookup, getattr and readdir, as in hello_ll).
func statBuffer(_ a: NodeAttributes) -> stat {
  var st = stat()
  st.st_ino = ino_t(a.inode)
  st.st_mode = (a.isDirectory ? S_IFDIR : S_IFREG) | mode_t(a.permissions)
  st.st_nlink = nlink_t(a.linkCount)
  st.st_size = off_t(clamping: a.size)
  st.st_blocks = blkcnt_t(clamping: a.blocks)
  st.st_blksize = 4096
  st.st_uid = uid_t(a.uid)
  st.st_gid = gid_t(a.gid)
  st.st_atim = timespec(tv_sec: a.accessed.seconds, tv_nsec: a.accessed.nanoseconds)
  st.st_mtim = timespec(tv_sec: a.modified.seconds, tv_nsec: a.modified.nanoseconds)
  st.st_ctim = timespec(tv_sec: a.changed.seconds, tv_nsec: a.changed.nanoseconds)
  return st
}

/// Reads shorter than this are copied: libfuse splices only from 2 pages up, and for small
/// replies the pipe round trip costs more than the copy it saves.
private let spliceMinimum = 16 << 10

/// Replies to a read of `size` bytes at `offset` of `content` with file ranges and zeros, spliced
/// by the kernel; false (nothing sent) when the range needs decoding or is too fragmented.
private func replySpliced(
  _ req: fuse_req_t?, _ content: any ByteView, _ size: Int, _ offset: UInt64, pipeCapacity: Int
) throws -> Bool {
  // libfuse's pipe-size rule: a page for the header, one per piece and one spare, plus the data.
  let page = 4096
  let maxPieces = min(Int(CFUSE_MAX_PIECES), (pipeCapacity - 16 - size) / page - 2)
  guard maxPieces >= 1,
    let pieces = try content.readPieces(at: offset, count: size, maxPieces: maxPieces),
    !pieces.isEmpty
  else { return false }
  var zeros = 0
  var c: [cfuse_piece] = []
  for piece in pieces {
    switch piece {
    case .file(let file, let hostOffset, let length):
      // A source without a descriptor (in memory) cannot be spliced: copy instead.
      guard let fd = file.descriptor else { return false }
      c.append(cfuse_piece(fd: fd.rawValue, offset: off_t(hostOffset), size: length))
    case .zeros(let length):
      zeros += length
      c.append(cfuse_piece(fd: -1, offset: 0, size: length))
    }
  }
  guard zeros <= cfuse_zero_bytes else { return false }
  // The request is answered (or gone) either way; libfuse logs a failure to send.
  _ = c.withUnsafeBufferPointer { cfuse_reply_pieces(req, $0.baseAddress, $0.count) }
  return true
}

/// Answers a read of `size` bytes at `offset` of `content`: spliced when it can be, else copied
/// through this thread's buffer (short only at the end of the view).
@inline(__always)
func replyRead(
  _ req: fuse_req_t?, _ ctx: FUSEContext, _ content: any ByteView, _ size: Int, _ offset: UInt64
) throws {
  if ctx.spliceCapacity > 0, size >= spliceMinimum,
    try replySpliced(req, content, size, offset, pipeCapacity: ctx.spliceCapacity)
  {
    return
  }
  try ctx.buffers.withBuffer(count: size) { buffer in
    let n = try content.read(into: buffer, at: offset)
    fuse_reply_buf(req, buffer.baseAddress?.assumingMemoryBound(to: CChar.self), n)
  }
}

/// The operations table. Built in a library function (a global `var` table is rejected, and
/// closures in main.swift would be main-actor isolated and trap on libfuse's threads);
/// `fuse_session_new` copies it.
func makeOperations() -> fuse_lowlevel_ops {
  var ops = fuse_lowlevel_ops()
  ops.`init` = fuseInit
  // +Attributes
  ops.lookup = fuseLookup
  ops.getattr = fuseGetattr
  ops.setattr = fuseSetattr
  // +Data
  ops.open = fuseOpen
  ops.read = fuseRead
  ops.write = fuseWrite
  ops.fallocate = fuseFallocate
  ops.fsync = fuseFsync
  ops.flush = fuseFlush
  ops.release = fuseRelease
  ops.lseek = fuseLseek
  // +Directories
  ops.opendir = fuseOpendir
  ops.readdir = fuseReaddir
  ops.releasedir = fuseReleasedir
  ops.statfs = fuseStatfs
  return ops
}

/// Connection setup: asynchronous reads, splice, and the `max_read` the mount option promised.
func fuseInit(_ userdata: UnsafeMutableRawPointer?, _ conn: UnsafeMutablePointer<fuse_conn_info>?) {
  guard let conn, let userdata else { return }
  let ctx = Unmanaged<FUSEContext>.fromOpaque(userdata).takeUnretainedValue()
  // Reads of one file handle may run concurrently (we are stateless per read).
  if conn.pointee.capable & UInt32(FUSE_CAP_ASYNC_READ) != 0 {
    conn.pointee.want |= UInt32(FUSE_CAP_ASYNC_READ)
  }
  // On a read-write mount, direct I/O from aio submitters as synchronous requests: asynchronous
  // ones are background requests, and a background request whose answer waits for an
  // invalidation can starve the read-ahead that holds the very pages the invalidation waits for
  // (CacheInvalidator). A read-only mount invalidates nothing and keeps them.
  if !ctx.asyncDirectIO { conn.pointee.want &= ~UInt32(FUSE_CAP_ASYNC_DIO) }
  if ctx.spliceCapacity > 0 {
    let splice = UInt32(FUSE_CAP_SPLICE_WRITE) | UInt32(FUSE_CAP_SPLICE_MOVE)
    conn.pointee.want |= conn.pointee.capable & splice
  }
  // Must equal the `-o max_read` mount option (MountOptions.arguments passes it): a
  // mismatch kills the mount. max_write stays as negotiated (1 MiB).
  if let maxRead = ctx.maxRead { conn.pointee.max_read = UInt32(maxRead) }
}

/// A request answered later, from another thread (`FUSEContext.changed`). libfuse allows a reply
/// from any thread; the request stays valid until its one reply.
struct PendingRequest: @unchecked Sendable {
  let req: fuse_req_t?
  init(_ req: fuse_req_t?) { self.req = req }
}
