import CFuse

#if canImport(Glibc)
  import Glibc
#endif

/// Hands each request to its handler with its decoded arguments, and answers what vdiskfs does
/// not implement with ENOSYS, as libfuse did for operations missing from its table.
enum KernelDispatch {
  /// What the worker does after a request.
  enum Outcome: Equatable {
    case next
    /// DESTROY: the connection is being torn down; the loop ends.
    case destroyed
    /// INIT refused (too old a kernel): the loop ends with this error.
    case refused(InitNegotiation.Refusal)
  }

  /// Dispatches `request`, read from `device`; the reply (if the opcode has one) goes back there.
  static func dispatch(
    _ request: KernelRequest, device: Int32, connection: KernelConnection, context ctx: FUSEContext,
    pipe: SplicePipe?
  ) -> Outcome {
    let req = FUSERequest(device: device, unique: request.unique)
    let ino = request.nodeID
    let opcode = fuse_opcode(request.opcode)
    // Before INIT is answered the kernel sends nothing else; libfuse answered EIO if it did.
    guard connection.initialized || opcode == FUSE_INIT else {
      req.replyError(EIO)
      return .next
    }
    do {
      switch opcode {
      case FUSE_INIT:
        return initialize(request, req, connection)
      case FUSE_DESTROY:
        req.replyError(0)
        return .destroyed
      case FUSE_FORGET, FUSE_BATCH_FORGET:
        // Inode numbers are fixed: nothing to forget, and the kernel expects no reply.
        return .next
      case FUSE_INTERRUPT:
        // No reply: ignored, as libfuse ignored it for us (no interrupt handler was set); every
        // request is answered when its work is done.
        return .next
      case FUSE_LOOKUP:
        fuseLookup(req, ctx, ino, try request.name(after: 0))
      case FUSE_GETATTR:
        fuseGetattr(req, ctx, ino)
      case FUSE_SETATTR:
        fuseSetattr(req, ctx, ino, try request.argument(fuse_setattr_in.self))
      case FUSE_OPEN:
        fuseOpen(req, ctx, ino, flags: Int32(bitPattern: try request.argument(fuse_open_in.self).flags))
      case FUSE_READ:
        fuseRead(req, ctx, pipe, ino, try readArguments(request, limit: ctx.buffers.bufferSize))
      case FUSE_WRITE:
        let arguments = try request.argument(fuse_write_in.self)
        let data = try request.trailing(after: MemoryLayout<fuse_write_in>.size)
        guard data.count == Int(arguments.size) else { throw FileSystemError(EINVAL) }
        fuseWrite(req, ctx, ino, arguments, data)
      case FUSE_FALLOCATE:
        fuseFallocate(req, ctx, ino, try request.argument(fuse_fallocate_in.self))
      case FUSE_FSYNC:
        fuseFsync(req, ctx, ino)
      case FUSE_FLUSH:
        fuseFlush(req, ctx, ino)
      case FUSE_RELEASE:
        fuseRelease(req, ctx, ino, handle: try request.argument(fuse_release_in.self).fh)
      case FUSE_LSEEK:
        fuseLseek(req, ctx, ino, try request.argument(fuse_lseek_in.self))
      case FUSE_OPENDIR:
        fuseOpendir(req, ctx, ino)
      case FUSE_READDIR:
        fuseReaddir(req, ctx, ino, try readArguments(request, limit: 1 << 20))
      case FUSE_RELEASEDIR:
        fuseReleasedir(req)
      case FUSE_STATFS:
        fuseStatfs(req, ctx)
      default:
        req.replyError(ENOSYS)
      }
    } catch {
      // A request whose arguments do not match its length: its answer.
      req.replyError((error as? FileSystemError)?.errno ?? EINVAL)
    }
    return .next
  }

  /// READ and READDIR arguments, with a size no larger than `limit` (the kernel never asks for
  /// more than max_read, max_pages pages, which the read buffers hold).
  private static func readArguments(_ request: KernelRequest, limit: Int) throws -> fuse_read_in {
    let arguments = try request.argument(fuse_read_in.self)
    guard Int(arguments.size) <= limit else { throw FileSystemError(EINVAL) }
    return arguments
  }

  /// INIT: the negotiated reply, or EPROTO and the refusal.
  private static func initialize(
    _ request: KernelRequest, _ req: FUSERequest, _ connection: KernelConnection
  ) -> Outcome {
    guard !connection.initialized else {
      req.replyError(EIO)
      return .next
    }
    // Before 7.36 the kernel sends the first 16 bytes (major, minor, max_readahead, flags).
    guard let offer = try? request.argument(fuse_init_in.self, atLeast: 16, zero: fuse_init_in()) else {
      req.replyError(EINVAL)
      return .next
    }
    switch InitNegotiation.reply(to: offer, settings: connection.settings) {
    case .success(let out):
      // Marked first: the kernel sends the next request as soon as it has the reply, perhaps to
      // another worker.
      connection.markInitialized(out)
      req.reply(out)
      return .next
    case .failure(let refusal):
      req.replyError(EPROTO)
      return .refused(refusal)
    }
  }
}
