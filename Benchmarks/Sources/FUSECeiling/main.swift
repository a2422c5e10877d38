// `FUSECeiling FILE MOUNTPOINT`: a minimal libfuse low-level server with one read-only file,
// MOUNTPOINT/disk.raw, whose reads are `pread`s of FILE. No image format, no cache, no view
// logic: what the FUSE transport alone costs, with vdiskfs's transport settings (the
// multi-threaded loop, 4 threads, clone_fd; max_read 960 KiB; direct I/O for O_DIRECT opens).
// bench.sh measures it beside vdiskfs on the random-read workloads: what the transport alone
// allows with these settings. Runs in the foreground; stop it with `fusermount3 -u`.
import CFuse
import CLinux

#if canImport(Glibc)
  import Glibc
#endif

/// What the callbacks need, reached through libfuse's userdata.
final class Served: Sendable {
  let fd: Int32
  let size: off_t
  init(fd: Int32, size: off_t) {
    self.fd = fd
    self.size = size
  }
}

let maxRead = 960 << 10
let fileInode: fuse_ino_t = 2

/// The userdata of `req` (set in `fuse_session_new` below, so never nil).
func served(_ req: fuse_req_t?) -> Served {
  guard let userdata = fuse_req_userdata(req) else { fail("request without userdata") }
  return Unmanaged<Served>.fromOpaque(userdata).takeUnretainedValue()
}

func attributes(_ ino: fuse_ino_t, _ s: Served) -> stat {
  var st = stat()
  st.st_ino = ino_t(ino)
  if ino == fileInode {
    st.st_mode = S_IFREG | 0o444
    st.st_nlink = 1
    st.st_size = s.size
  } else {
    st.st_mode = S_IFDIR | 0o555
    st.st_nlink = 2
  }
  return st
}

func makeOperations() -> fuse_lowlevel_ops {
  var ops = fuse_lowlevel_ops()
  ops.`init` = { _, conn in conn?.pointee.max_read = UInt32(maxRead) }
  ops.lookup = { req, parent, name in
    guard parent == FUSE_ROOT_ID, let name, String(cString: name) == "disk.raw" else {
      fuse_reply_err(req, ENOENT)
      return
    }
    var e = fuse_entry_param()
    e.ino = fileInode
    e.attr = attributes(fileInode, served(req))
    e.attr_timeout = 3600
    e.entry_timeout = 3600
    fuse_reply_entry(req, &e)
  }
  ops.getattr = { req, ino, _ in
    var st = attributes(ino, served(req))
    fuse_reply_attr(req, &st, 3600)
  }
  ops.open = { req, _, fi in
    guard let fi else { return }
    if fi.pointee.flags & clinux_o_direct != 0 {
      fi.pointee.direct_io = 1
      fi.pointee.noflush = 1
    } else {
      fi.pointee.keep_cache = 1
    }
    fuse_reply_open(req, fi)
  }
  ops.read = { req, _, size, offset, _ in
    let s = served(req)
    withUnsafeTemporaryAllocation(byteCount: max(size, 1), alignment: 4096) { buffer in
      let n = pread(s.fd, buffer.baseAddress, size, offset)
      if n < 0 {
        fuse_reply_err(req, errno)
      } else {
        fuse_reply_buf(req, buffer.baseAddress?.assumingMemoryBound(to: CChar.self), n)
      }
    }
  }
  return ops
}

/// Reports on standard error and exits.
func fail(_ message: String, status: Int32 = 1) -> Never {
  let text = "FUSECeiling: \(message)\n"
  _ = text.withCString { write(2, $0, strlen($0)) }
  exit(status)
}

let arguments = CommandLine.arguments
guard arguments.count == 3 else { fail("usage: FUSECeiling FILE MOUNTPOINT", status: 2) }
let fd = open(arguments[1], O_RDONLY | O_CLOEXEC)
var st = stat()
guard fd >= 0, fstat(fd, &st) == 0 else { fail("cannot open \(arguments[1])") }
let userdata = Unmanaged.passRetained(Served(fd: fd, size: st.st_size)).toOpaque()
var ops = makeOperations()
let options: [String] = ["FUSECeiling", "-o", "ro,default_permissions,max_read=\(maxRead)"]
var argv: [UnsafeMutablePointer<CChar>?] = options.map { strdup($0) } + [nil]
var args = cfuse_args_init(3, &argv)
guard let session = fuse_session_new(&args, &ops, MemoryLayout<fuse_lowlevel_ops>.size, userdata),
  fuse_session_mount(session, arguments[2]) == 0
else { fail("cannot mount on \(arguments[2])") }
let config = fuse_loop_cfg_create()
fuse_loop_cfg_set_max_threads(config, 4)
fuse_loop_cfg_set_clone_fd(config, 1)
_ = fuse_session_loop_mt(session, config)
fuse_session_unmount(session)
fuse_session_destroy(session)
