import CFuse
import Logging
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

// What the request handlers share. The handlers are named functions (`fuseRead`, …), one file per
// group (+Attributes, +Data, +Directories), called by the request loop's dispatch
// (Kernel/KernelDispatch.swift) with the decoded arguments; each asks the context's `VirtualTree`,
// then replies exactly once; every error goes through `errnoValue(for:logger:)`.

/// Runs `body`; an error it throws is the request's answer.
@inline(__always)
func handle(_ req: FUSERequest, _ ctx: FUSEContext, _ body: () throws -> Void) {
  ctx.requestArrived()
  do {
    try body()
  } catch {
    req.replyError(errnoValue(for: error, logger: ctx.logger, limiter: ctx.errorLimiter))
  }
}

/// The kernel's `fuse_attr` for tree attributes (shared by lookup, getattr and setattr), as
/// libfuse converted a `struct stat`.
func kernelAttributes(_ a: NodeAttributes) -> fuse_attr {
  var attr = fuse_attr()
  attr.ino = a.inode
  attr.mode = (a.isDirectory ? UInt32(Glibc.S_IFDIR) : UInt32(Glibc.S_IFREG)) | a.permissions
  attr.nlink = a.linkCount
  attr.size = min(a.size, UInt64(Int64.max))
  attr.blocks = min(a.blocks, UInt64(Int64.max))
  attr.blksize = 4096
  attr.uid = a.uid
  attr.gid = a.gid
  func time(_ t: NodeTime) -> (UInt64, UInt32) {
    (UInt64(bitPattern: Int64(t.seconds)), UInt32(clamping: t.nanoseconds))
  }
  (attr.atime, attr.atimensec) = time(a.accessed)
  (attr.mtime, attr.mtimensec) = time(a.modified)
  (attr.ctime, attr.ctimensec) = time(a.changed)
  return attr
}

/// The reply to getattr and setattr.
func attributeReply(_ a: NodeAttributes, timeout: Double) -> fuse_attr_out {
  var out = fuse_attr_out()
  (out.attr_valid, out.attr_valid_nsec) = kernelTimeout(timeout)
  out.attr = kernelAttributes(a)
  return out
}

/// Reads shorter than this are copied: for small replies the pipe round trip costs more than the
/// copy it saves (libfuse spliced only from 2 pages up).
private let spliceMinimum = 16 << 10

/// Replies to a read of `size` bytes at `offset` of `content` with file ranges and zeros, spliced
/// by the kernel through the worker's pipe; false (nothing sent) when the range needs decoding or
/// is too fragmented, or the pipe could not be filled.
private func replySpliced(
  _ req: FUSERequest, _ pipe: SplicePipe, _ content: any ByteView, _ size: Int, _ offset: UInt64
) throws -> Bool {
  // The pipe must hold the data, a page for the header, one per piece and one spare.
  let page = 4096
  let maxPieces = min(Int(CFUSE_MAX_PIECES), (pipe.capacity - 16 - size) / page - 2)
  guard maxPieces >= 1,
    let pieces = try content.readPieces(at: offset, count: size, maxPieces: maxPieces),
    !pieces.isEmpty, pieces.count <= maxPieces
  else { return false }
  var zeros = 0
  var c: [cfuse_piece] = []
  c.reserveCapacity(pieces.count)
  for piece in pieces {
    switch piece {
    case .file(let file, let hostOffset, let length):
      // A source without a descriptor (in memory) cannot be spliced: copy instead.
      guard let fd = file.descriptor, hostOffset <= UInt64(Int64.max) else { return false }
      c.append(cfuse_piece(fd: fd.rawValue, offset: off_t(hostOffset), size: length))
    case .zeros(let length):
      zeros += length
      c.append(cfuse_piece(fd: -1, offset: 0, size: length))
    }
  }
  guard zeros <= cfuse_zero_bytes else { return false }
  return pipe.send(req, c)
}

/// Answers a read of `size` bytes at `offset` of `content`: spliced when it can be, else copied
/// through this thread's buffer (short only at the end of the view).
@inline(__always)
func replyRead(
  _ req: FUSERequest, _ ctx: FUSEContext, _ pipe: SplicePipe?, _ content: any ByteView, _ size: Int,
  _ offset: UInt64
) throws {
  if let entry = req.entry, size <= entry.payloadCapacity {
    // io_uring: straight into the entry's payload, which the kernel copies from.
    let n = try content.read(
      into: UnsafeMutableRawBufferPointer(start: entry.payload, count: size), at: offset)
    entry.commit(error: 0, payloadLength: min(n, size))
    return
  }
  if let pipe, size >= spliceMinimum, try replySpliced(req, pipe, content, size, offset) {
    return
  }
  try ctx.buffers.withBuffer(count: size) { buffer in
    let n = try content.read(into: buffer, at: offset)
    req.reply(bytes: UnsafeRawBufferPointer(rebasing: buffer[0..<min(n, buffer.count)]))
  }
}
