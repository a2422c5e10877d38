/// How `FUSESession` mounts a chain.
public struct MountOptions: Sendable {
  /// Mount read-only (`-o ro`); this foundation cannot write yet, so writes fail with EROFS
  /// either way, but the file shows mode 0644 on a read-write mount.
  public var readOnly: Bool = true
  /// `-o allow_shrink`: truncating disk.raw smaller shrinks the virtual disk.
  public var allowShrink: Bool = false
  /// Let users other than the mounting one in (`-o allow_other`; the kernel then checks the
  /// modes, `default_permissions` is always on).
  public var allowOther: Bool = false
  /// Maximum worker threads of the multi-threaded loop.
  public var threads: Int = 8
  /// libfuse's `-d`: every request is logged (through `installFUSELogRouting`, at debug level).
  public var debug: Bool = false
  /// The source column of /proc/mounts (the CLI passes the image path).
  public var fsname: String = "vdiskfs"
  /// Extra `-o` options passed to libfuse as they are (noatime, nodev, nosuid, …).
  public var libfuseOptions: [String] = []
  /// Tuning: on a read-only mount, keep the kernel's page cache of disk.raw across opens
  /// (`keep_cache`); the content cannot change while mounted.
  public var keepCache: Bool = true
  /// Tuning: raise the FUSE connection's read-ahead to this many KiB after mounting (root only,
  /// best effort; the kernel default is 128), or nil to leave it.
  public var readAheadKilobytes: Int? = 1024

  public init() {}

  /// The argument vector handed to `fuse_session_new` (argv[0] included).
  var arguments: [String] {
    var args = ["vdiskfs"]
    if debug { args.append("-d") }
    var options = ["fsname=" + Self.escape(fsname), "subtype=vdiskfs", "default_permissions"]
    if readOnly { options.append("ro") }
    if allowOther { options.append("allow_other") }
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
