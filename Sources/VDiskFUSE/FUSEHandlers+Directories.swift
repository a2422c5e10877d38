import CFuse
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

// Directories and the file system: opendir, readdir, releasedir, statfs.

func fuseOpendir(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
  handle(req) { ctx in
    try ctx.tree.openDirectory(ino)
    fuse_reply_open(req, fi)
  }
}

/// Each entry's offset is the index of the next one: a later call resumes there.
func fuseReaddir(
  _ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int, _ offset: off_t,
  _ fi: UnsafeMutablePointer<fuse_file_info>?
) {
  handle(req) { ctx in
    let entries = try ctx.tree.entries(of: ino)
    guard offset >= 0 else { throw FileSystemError(EINVAL) }
    try withUnsafeTemporaryAllocation(of: CChar.self, capacity: max(size, 1)) { buffer in
      guard let base = buffer.baseAddress else { throw FileSystemError(ENOMEM) }
      var used = 0
      var index = Int(clamping: offset)
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

func fuseReleasedir(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
  fuse_reply_err(req, 0)
}

func fuseStatfs(_ req: fuse_req_t?, _ ino: fuse_ino_t) {
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
