/// Whether requests are served through FUSE-over-io_uring (Linux 6.14+, offered by the kernel
/// only while /sys/module/fuse/parameters/enable_uring is Y).
public enum IOURingMode: String, Sendable, Equatable {
  /// Use it when the kernel offers it, else /dev/fuse.
  case auto
  /// Use it; the mount fails when the kernel does not offer it.
  case on
  /// Never: /dev/fuse only.
  case off

  /// Whether the kernel will offer it: the fuse module's `enable_uring` parameter is Y (nil:
  /// the parameter does not exist, a kernel without FUSE-over-io_uring).
  public static func kernelOffers() -> Bool? {
    guard let text = MountPoint.readProcFile(parameterPath) else { return nil }
    return text.hasPrefix("Y") || text.hasPrefix("1")
  }

  /// The switch an administrator flips (`echo 1 >` it, or `fuse.enable_uring=1` at boot).
  public static let parameterPath = "/sys/module/fuse/parameters/enable_uring"
}

/// How `FUSESession` mounts a chain.
public struct MountOptions: Sendable {
  /// Mount read-only (`-o ro`): every view refuses writes with EROFS (the CLI mounts read-write
  /// unless told otherwise).
  public var readOnly: Bool = true
  /// `-o allow_shrink`: truncating disk.raw smaller shrinks the virtual disk.
  public var allowShrink: Bool = false
  /// Let users other than the mounting one in (`-o allow_other`; the kernel then checks the
  /// modes, `default_permissions` is always on).
  public var allowOther: Bool = false
  /// Worker threads of the request loop (exactly this many, each on its own /dev/fuse clone).
  /// Measured on 2 CPUs (fio 4 KiB random
  /// read, 4 jobs): 2–4 threads ≈ 200–220 k IOPS, 8 threads ≈ 180 k (more threads, more
  /// context switches, no more parallelism); sequential reads do not gain from more than 4.
  public var threads: Int = 4
  /// `-d`: every request is logged at debug level (by the request loop; libfuse's own messages
  /// through `installFUSELogRouting`).
  public var debug: Bool = false
  /// The source column of /proc/mounts (the CLI passes the image path).
  public var fsname: String = "vdiskfs"
  /// Extra `-o` options passed to libfuse as they are (noatime, nodev, nosuid, …).
  public var libfuseOptions: [String] = []
  /// Tuning: keep the kernel's page cache of the files across opens (`keep_cache`). Read-only
  /// views cannot change while mounted; read-write ones invalidate exactly what each write,
  /// discard and truncate changes (`PageCacheRegistry`).
  public var keepCache: Bool = true
  /// Tuning: raise the FUSE connection's read-ahead to this many KiB after mounting (root only,
  /// best effort; the kernel default is 128), or nil to leave it. Four `maxRead` requests, so
  /// several workers splice at once: measured with dd bs=1M, fresh mounts of warm 512 MiB
  /// images, medians of 6-8: vhdx 3.55 GB/s at 960 KiB (one 1 MiB request: 2.9 GB/s without
  /// splice) -> 4.2 GB/s at 3840 KiB; qcow2 3.7 -> 4.3 GB/s; 7680 KiB gains nothing more.
  public var readAheadKilobytes: Int? = 3840
  /// Tuning: answer reads of uncompressed data by splicing the image's pages into the reply
  /// (see `FUSEContext.spliceCapacity`).
  public var splice: Bool = true
  /// Tuning: the largest read request the kernel sends (bytes; nil: its default, 1 MiB; a mount
  /// option, enforced by the kernel). 960 KiB so that a whole request can be spliced through a
  /// 1 MiB pipe (the unprivileged `pipe-max-size`) with the headroom `replySpliced` keeps: a page
  /// for the reply header, one per piece and one spare.
  public var maxRead: Int? = 960 << 10
  /// `-o passthrough=auto` (true) or `off`: open the root disk.raw with a kernel backing file
  /// when its image qualifies (`ImageLayer.passthroughFile`), the kernel offers FUSE passthrough
  /// (7.40, Linux 6.9+) and the process holds CAP_SYS_ADMIN; silently the normal path otherwise.
  public var passthrough: Bool = true
  /// `-o io_uring=auto|on|off`: FUSE-over-io_uring (`RingQueues`) when the kernel offers it.
  public var ioURing: IOURingMode = .auto

  public init() {}

  /// The argument vector handed to `fuse_session_new` (argv[0] included).
  var arguments: [String] {
    var args = ["vdiskfs"]
    if debug { args.append("-d") }
    var options = ["fsname=" + Self.escape(fsname), "subtype=vdiskfs", "default_permissions"]
    if readOnly { options.append("ro") }
    if allowOther { options.append("allow_other") }
    if let maxRead { options.append("max_read=\(maxRead)") }
    options += libfuseOptions
    for o in options { args += ["-o", o] }
    return args
  }

  /// libfuse splits `-o` values at commas and treats backslash as an escape: protect both so an
  /// image path with a comma stays one fsname.
  static func escape(_ value: String) -> String {
    var out = ""
    for c in value {
      if c == "," || c == "\\" { out.append("\\") }
      out.append(c)
    }
    return out
  }
}
