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

  /// Dispatches `request`; the reply (if the opcode has one) goes through `req` (the device it
  /// was read from, or its io_uring entry).
  static func dispatch(
    _ request: KernelRequest, reply req: FUSERequest, connection: KernelConnection, context ctx: FUSEContext,
    pipe: SplicePipe?
  ) -> Outcome {
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
        return initialize(request, req, connection, ctx)
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

  /// The opcode's name as libfuse's `-d` trace printed it ("???" for one it did not know).
  static func name(of opcode: UInt32) -> String {
    let names: [fuse_opcode: String] = [
      FUSE_LOOKUP: "LOOKUP", FUSE_FORGET: "FORGET", FUSE_GETATTR: "GETATTR", FUSE_SETATTR: "SETATTR",
      FUSE_READLINK: "READLINK", FUSE_SYMLINK: "SYMLINK", FUSE_MKNOD: "MKNOD", FUSE_MKDIR: "MKDIR",
      FUSE_UNLINK: "UNLINK", FUSE_RMDIR: "RMDIR", FUSE_RENAME: "RENAME", FUSE_LINK: "LINK", FUSE_OPEN: "OPEN",
      FUSE_READ: "READ", FUSE_WRITE: "WRITE", FUSE_STATFS: "STATFS", FUSE_RELEASE: "RELEASE",
      FUSE_FSYNC: "FSYNC", FUSE_SETXATTR: "SETXATTR", FUSE_GETXATTR: "GETXATTR", FUSE_LISTXATTR: "LISTXATTR",
      FUSE_REMOVEXATTR: "REMOVEXATTR", FUSE_FLUSH: "FLUSH", FUSE_INIT: "INIT", FUSE_OPENDIR: "OPENDIR",
      FUSE_READDIR: "READDIR", FUSE_RELEASEDIR: "RELEASEDIR", FUSE_FSYNCDIR: "FSYNCDIR", FUSE_GETLK: "GETLK",
      FUSE_SETLK: "SETLK", FUSE_SETLKW: "SETLKW", FUSE_ACCESS: "ACCESS", FUSE_CREATE: "CREATE",
      FUSE_INTERRUPT: "INTERRUPT", FUSE_BMAP: "BMAP", FUSE_DESTROY: "DESTROY", FUSE_IOCTL: "IOCTL",
      FUSE_POLL: "POLL", FUSE_NOTIFY_REPLY: "NOTIFY_REPLY", FUSE_BATCH_FORGET: "BATCH_FORGET",
      FUSE_FALLOCATE: "FALLOCATE", FUSE_READDIRPLUS: "READDIRPLUS", FUSE_RENAME2: "RENAME2",
      FUSE_LSEEK: "LSEEK", FUSE_COPY_FILE_RANGE: "COPY_FILE_RANGE",
    ]
    return names[fuse_opcode(opcode)] ?? "???"
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
    _ request: KernelRequest, _ req: FUSERequest, _ connection: KernelConnection, _ ctx: FUSEContext
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
      if UInt64(out.flags2) << 32 & UInt64(FUSE_PASSTHROUGH) != 0 { ctx.backingFiles.enable() }
      req.reply(out)
      let offered = String(InitNegotiation.offeredFlags(offer), radix: 16)
      let answered = String(UInt64(out.flags) | UInt64(out.flags2) << 32, radix: 16)
      ctx.logger.debug(
        "INIT: kernel \(offer.major).\(offer.minor) flags 0x\(offered); answered 7.\(out.minor) flags 0x\(answered), max_write \(out.max_write)"
      )
      return .next
    case .failure(let refusal):
      req.replyError(EPROTO)
      return .refused(refusal)
    }
  }
}
