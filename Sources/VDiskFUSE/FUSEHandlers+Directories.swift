import CFuse
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

// Directories and the file system: opendir, readdir, releasedir, statfs.

func fuseOpendir(_ req: FUSERequest, _ ctx: FUSEContext, _ ino: UInt64) {
  handle(req, ctx) {
    try ctx.tree.openDirectory(ino)
    req.reply(fuse_open_out())
  }
}

/// Each entry's offset is the index of the next one: a later call resumes there. Entries are the
/// kernel's `fuse_dirent`s (`cfuse_add_dirent`), as libfuse's `fuse_add_direntry` laid them out.
func fuseReaddir(_ req: FUSERequest, _ ctx: FUSEContext, _ ino: UInt64, _ arguments: fuse_read_in) {
  handle(req, ctx) {
    let entries = try ctx.tree.entries(of: ino)
    guard arguments.offset <= UInt64(Int64.max) else { throw FileSystemError(EINVAL) }
    let size = Int(arguments.size)
    try withUnsafeTemporaryAllocation(byteCount: max(size, 1), alignment: 8) { buffer in
      guard let base = buffer.baseAddress else { throw FileSystemError(ENOMEM) }
      var used = 0
      var index = Int(clamping: arguments.offset)
      while index < entries.count {
        let e = entries[index]
        let mode = e.isDirectory ? UInt32(Glibc.S_IFDIR) : UInt32(Glibc.S_IFREG)
        let needed = e.name.withCString { name in
          cfuse_add_dirent(base + used, size - used, e.inode, UInt64(index + 1), mode, name, strlen(name))
        }
        if needed > size - used { break }
        used += needed
        index += 1
      }
      req.reply(bytes: UnsafeRawBufferPointer(start: base, count: used))
    }
  }
}

func fuseReleasedir(_ req: FUSERequest) {
  req.replyError(0)
}

func fuseStatfs(_ req: FUSERequest, _ ctx: FUSEContext) {
  handle(req, ctx) {
    let bytes = ctx.tree.views.reduce(UInt64(0)) { $0 + $1.content.size }
    var out = fuse_statfs_out()
    out.st.bsize = 4096
    out.st.frsize = 4096
    out.st.blocks = (bytes + 4095) / 4096
    out.st.bfree = 0
    out.st.bavail = 0
    out.st.files = UInt64(ctx.tree.nodeCount)
    out.st.ffree = 0
    out.st.namelen = 255
    req.reply(out)
  }
}
