import CFuse
import Logging
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

// The C trampolines libfuse calls on its worker threads, and the only code that turns libfuse's
// userdata back into a `FUSEContext`. Each handler asks the context's `VirtualTree`, then replies
// exactly once; every error goes through `errnoValue(for:logger:)`.

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
private func handle(_ req: fuse_req_t?, _ body: (FUSEContext) throws -> Void) {
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
  let time = timespec(tv_sec: a.seconds, tv_nsec: a.nanoseconds)
  st.st_atim = time
  st.st_mtim = time
  st.st_ctim = time
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
private func replyRead(
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
  ops.`init` = { userdata, conn in
    guard let conn, let userdata else { return }
    let ctx = Unmanaged<FUSEContext>.fromOpaque(userdata).takeUnretainedValue()
    // Reads of one file handle may run concurrently (we are stateless per read).
    if conn.pointee.capable & UInt32(FUSE_CAP_ASYNC_READ) != 0 {
      conn.pointee.want |= UInt32(FUSE_CAP_ASYNC_READ)
    }
    if ctx.spliceCapacity > 0 {
      let splice = UInt32(FUSE_CAP_SPLICE_WRITE) | UInt32(FUSE_CAP_SPLICE_MOVE)
      conn.pointee.want |= conn.pointee.capable & splice
    }
    // Must equal the `-o max_read` mount option (MountOptions.arguments passes it): a
    // mismatch kills the mount. max_write stays as negotiated (1 MiB).
    if let maxRead = ctx.maxRead { conn.pointee.max_read = UInt32(maxRead) }
  }
  ops.lookup = { req, parent, name in
    handle(req) { ctx in
      guard let name else { throw FileSystemError(EINVAL) }
      let node = try ctx.tree.lookup(parent: parent, name: String(cString: name))
      var entry = fuse_entry_param()
      entry.ino = fuse_ino_t(node.inode)
      entry.generation = 1
      entry.attr = statBuffer(try ctx.tree.attributes(of: node.inode))
      entry.attr_timeout = ctx.timeout(for: node)
      entry.entry_timeout = ctx.timeout(for: node)
      fuse_reply_entry(req, &entry)
    }
  }
  ops.getattr = { req, ino, _ in
    handle(req) { ctx in
      var st = statBuffer(try ctx.tree.attributes(of: ino))
      fuse_reply_attr(req, &st, ctx.timeout(for: try ctx.tree.node(ino)))
    }
  }
  ops.setattr = { req, ino, attr, toSet, _ in
    handle(req) { ctx in
      // Only the size can change (truncate grows the virtual disk); mode, owner and times of
      // disk.raw are fixed, and requests to change them are answered with the unchanged values.
      if toSet & FUSE_SET_ATTR_SIZE != 0 {
        guard let attr, attr.pointee.st_size >= 0 else { throw FileSystemError(EINVAL) }
        try ctx.tree.resize(ino, to: UInt64(attr.pointee.st_size))
      }
      var st = statBuffer(try ctx.tree.attributes(of: ino))
      fuse_reply_attr(req, &st, ctx.attributeTimeout)
    }
  }
  ops.open = { req, ino, fi in
    handle(req) { ctx in
      guard let fi else { throw FileSystemError(EINVAL) }
      let view = try ctx.tree.open(ino, flags: fi.pointee.flags)
      if !view.writable {
        // The content cannot change while mounted read-only: keep cached pages across opens,
        // and there is nothing to flush on close.
        fi.pointee.keep_cache = ctx.keepCache ? 1 : 0
        fi.pointee.noflush = 1
      }
      // O_DIRECT opens (fio, databases, qemu with cache=none) get direct I/O, and writers
      // parallel writes: without FOPEN_PARALLEL_DIRECT_WRITES the kernel holds the inode lock
      // across each direct write, so 4 writers run one at a time. libfuse 3.14 has no field for
      // that bit, so the open reply is built here. On a read-only view FOPEN_DIRECT_IO only
      // takes the kernel's synchronous read path instead of its async-DIO one: fio 4 KiB random
      // read, 4 jobs, vhdx, medians of 5: 229 k -> 240 k IOPS.
      let direct = (ctx.directWrites || !view.writable) && fi.pointee.flags & cfuse_o_direct != 0
      if !direct { view.cachedOpens.opened() }
      let handle = OpenFile.handle(for: view, direct: direct)
      fi.pointee.fh = handle
      let sent =
        direct
        ? cfuse_reply_open_flags(
          req, handle,
          view.writable
            ? CFUSE_FOPEN_DIRECT_IO | CFUSE_FOPEN_PARALLEL_DIRECT_WRITES
            : CFUSE_FOPEN_DIRECT_IO | CFUSE_FOPEN_NOFLUSH)
        : fuse_reply_open(req, fi)
      if sent != 0 {
        // The kernel never saw the open (interrupted): no release will come for this handle.
        OpenFile.release(handle: handle)
      }
    }
  }
  ops.read = { req, ino, size, offset, fi in
    // The hottest handler: like the context, the open file is borrowed and its `DiskView` never
    // copied. 4 KiB reads, vhdx: 8 retains a request -> 1 (the view's content).
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
  ops.write = { req, ino, buf, size, offset, fi in
    handle(req) { ctx in
      guard offset >= 0 else { throw FileSystemError(EINVAL) }
      let open = OpenFile.from(handle: fi?.pointee.fh ?? 0)
      let view = try open?.view ?? ctx.tree.checkWritable(ino)
      let written = try ctx.tree.write(
        view: view, UnsafeRawBufferPointer(start: buf, count: size), at: UInt64(offset))
      if open?.direct == true, view.cachedOpens.any {
        // Pages other (buffered) opens cached are stale now; the kernel drops them only for
        // writes through the page cache.
        ctx.invalidateCache(inode: ino, offset: offset, length: written)
      }
      fuse_reply_write(req, written)
    }
  }
  ops.fallocate = { req, ino, mode, offset, length, _ in
    handle(req) { ctx in
      guard offset >= 0, length >= 0 else { throw FileSystemError(EINVAL) }
      try ctx.tree.fallocate(ino, mode: mode, offset: UInt64(offset), length: UInt64(length))
      fuse_reply_err(req, 0)
    }
  }
  ops.fsync = { req, ino, _, _ in
    handle(req) { ctx in
      try ctx.tree.sync(ino)
      fuse_reply_err(req, 0)
    }
  }
  ops.flush = { req, ino, _ in
    handle(req) { ctx in
      try ctx.tree.sync(ino)
      fuse_reply_err(req, 0)
    }
  }
  ops.release = { req, _, fi in
    if let fi { OpenFile.release(handle: fi.pointee.fh) }
    fuse_reply_err(req, 0)
  }
  ops.opendir = { req, ino, fi in
    handle(req) { ctx in
      try ctx.tree.openDirectory(ino)
      fuse_reply_open(req, fi)
    }
  }
  ops.readdir = { req, ino, size, offset, _ in
    handle(req) { ctx in
      let entries = try ctx.tree.entries(of: ino)
      guard offset >= 0 else { throw FileSystemError(EINVAL) }
      try withUnsafeTemporaryAllocation(of: CChar.self, capacity: max(size, 1)) { buffer in
        guard let base = buffer.baseAddress else { throw FileSystemError(ENOMEM) }
        var used = 0
        var index = Int(clamping: offset)
        // Each entry's offset is the index of the next one: a later call resumes there.
        while index < entries.count {
          let e = entries[index]
          var st = stat()
          st.st_ino = ino_t(e.inode)
          st.st_mode = e.isDirectory ? S_IFDIR : S_IFREG
          let needed = e.name.withCString {
            fuse_add_direntry(req, base + used, size - used, $0, &st, off_t(index + 1))
          }
          if needed > size - used { break }
          used += needed
          index += 1
        }
        fuse_reply_buf(req, base, used)
      }
    }
  }
  ops.releasedir = { req, _, _ in
    fuse_reply_err(req, 0)
  }
  ops.statfs = { req, _ in
    handle(req) { ctx in
      let bytes = ctx.tree.views.reduce(UInt64(0)) { $0 + $1.content.size }
      var s = statvfs()
      s.f_bsize = 4096
      s.f_frsize = 4096
      s.f_blocks = fsblkcnt_t((bytes + 4095) / 4096)
      s.f_bfree = 0
      s.f_bavail = 0
      s.f_files = fsfilcnt_t(ctx.tree.nodeCount)
      s.f_ffree = 0
      s.f_favail = 0
      s.f_namemax = 255
      fuse_reply_statfs(req, &s)
    }
  }
  ops.lseek = { req, ino, offset, whence, _ in
    handle(req) { ctx in
      // The kernel answers SEEK_SET/CUR/END itself and asks only for SEEK_DATA/SEEK_HOLE.
      let kind: VirtualTree.SeekKind
      switch whence {
      case cfuse_seek_data: kind = .data
      case cfuse_seek_hole: kind = .hole
      default: throw FileSystemError(EINVAL)
      }
      guard offset >= 0 else { throw FileSystemError(ENXIO) }
      let answer = try ctx.tree.seek(ino, from: UInt64(offset), to: kind)
      fuse_reply_lseek(req, off_t(answer))
    }
  }
  return ops
}
