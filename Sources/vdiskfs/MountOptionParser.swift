import RemoteStore

/// The `-o` options of `vdiskfs IMAGE MNT -o a,b,c` (the form mount.fuse3 and fstab use), split
/// into what vdiskfs acts on and what goes to libfuse. Unknown options are refused rather than
/// silently ignored.
struct ParsedMountOptions: Equatable {
  /// `ro` / `rw`, the last one given wins; read-write is the default.
  var readOnly = false
  var allowOther = false
  var debug = false
  var format: String?
  var cacheSize: Int?
  var threads: Int?
  var fsname: String?
  var forceShare = false
  var allowShrink = false
  /// `read_ahead_kb=N`: the mount's read-ahead in KiB (0 leaves the kernel's default).
  var readAheadKilobytes: Int?
  /// `nosplice`: copy read replies through a buffer instead of splicing the image's pages.
  var noSplice = false
  /// `backing_dir=DIR`: every backing file and extent file must resolve inside DIR.
  var backingDirectory: String?
  /// `nobacking`: open the top image only (unallocated ranges read as zeros); read-only.
  var noBacking = false
  /// How remote images are reached and cached (`ceph_conf`, `ceph_id`, `s3_endpoint`,
  /// `s3_region`, `sslverify`, `remote_cache`, `cache_dir`, `connections`, `remote_timeout`).
  var remote = RemoteOptions()
  /// `remote_backing`: a local image may name a backing file in a remote store.
  var remoteBacking = false
  /// Passed through to libfuse unchanged (mount flags it understands).
  var passThrough: [String] = []
}

enum MountOptionParser {
  /// Mount flags libfuse 3.14 understands and that mean the same for vdiskfs.
  static let passThrough: Set<String> = [
    "suid", "nosuid", "dev", "nodev", "exec", "noexec", "async", "sync", "dirsync", "atime", "noatime",
    "nodiratime", "relatime", "default_permissions", "allow_root", "auto_unmount",
  ]
  /// What mount(8), mount.fuse3 and fstab add or leave behind that means nothing to a FUSE program.
  static let ignored: Set<String> = [
    "defaults", "auto", "noauto", "user", "users", "nouser", "owner", "group", "nofail", "_netdev",
  ]

  static func parse(_ groups: [String]) throws(UsageError) -> ParsedMountOptions {
    var result = ParsedMountOptions()
    for option in groups.flatMap({ $0.split(separator: ",").map(String.init) }) where !option.isEmpty {
      let (key, value) = split(option)
      switch key {
      case "ro": result.readOnly = true
      case "rw": result.readOnly = false
      case "allow_other": result.allowOther = true
      case "debug": result.debug = true
      case "force_share", "noshare": result.forceShare = true
      case "allow_shrink": result.allowShrink = true
      case "format": result.format = try require(value, key)
      case "cache_size", "cache-size": result.cacheSize = try parseSize(try require(value, key), option: key)
      case "threads": result.threads = try parseThreads(try require(value, key))
      case "fsname": result.fsname = try require(value, key)
      case "read_ahead_kb": result.readAheadKilobytes = try parseReadAhead(try require(value, key))
      case "nosplice": result.noSplice = true
      case "backing_dir": result.backingDirectory = try require(value, key)
      case "nobacking": result.noBacking = true
      case "ceph_conf": result.remote.cephConf = try require(value, key)
      case "ceph_id": result.remote.cephID = try require(value, key)
      case "s3_endpoint": result.remote.s3Endpoint = try require(value, key)
      case "s3_region": result.remote.s3Region = try require(value, key)
      case "sslverify": result.remote.verifyTLS = try parseSwitch(try require(value, key), key)
      case "remote_cache": result.remote.cacheBytes = try parseSize(try require(value, key), option: key)
      case "cache_dir": result.remote.cacheDirectory = try require(value, key)
      case "connections": result.remote.connections = try parseCount(try require(value, key), key, 1...64)
      case "remote_timeout":
        result.remote.timeoutSeconds = try parseCount(try require(value, key), key, 1...3600)
      case "remote_backing": result.remoteBacking = true
      case "subtype": result.passThrough.append(option)
      case _ where passThrough.contains(key): result.passThrough.append(option)
      case _ where ignored.contains(key) || key.hasPrefix("x-") || key == "comment": continue
      default: throw UsageError("unknown mount option '\(option)'")
      }
    }
    return result
  }

  private static func parseReadAhead(_ text: String) throws(UsageError) -> Int {
    guard let n = Int(text), (0...65536).contains(n) else {
      throw UsageError("read_ahead_kb: '\(text)' is not a number of KiB from 0 to 65536")
    }
    return n
  }

  private static func parseSwitch(_ text: String, _ key: String) throws(UsageError) -> Bool {
    if ["on", "yes", "true", "1"].contains(text) { return true }
    if ["off", "no", "false", "0"].contains(text) { return false }
    throw UsageError("\(key): '\(text)' is not on or off")
  }

  private static func parseCount(_ text: String, _ key: String, _ range: ClosedRange<Int>) throws(UsageError)
    -> Int
  {
    guard let n = Int(text), range.contains(n) else {
      throw UsageError("\(key): '\(text)' is not a number from \(range.lowerBound) to \(range.upperBound)")
    }
    return n
  }

  private static func split(_ option: String) -> (String, String?) {
    guard let eq = option.firstIndex(of: "=") else { return (option, nil) }
    return (String(option[..<eq]), String(option[option.index(after: eq)...]))
  }

  private static func require(_ value: String?, _ key: String) throws(UsageError) -> String {
    guard let value, !value.isEmpty else {
      throw UsageError("mount option '\(key)' needs a value (\(key)=…)")
    }
    return value
  }

  /// Parses `65536`, `64K`, `64k`, `32M`, `32MiB`, `1G` into bytes.
  static func parseSize(_ text: String, option: String = "--cache-size") throws(UsageError) -> Int {
    let units: [(String, Int)] = [
      ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30),
      ("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30), ("B", 1), ("", 1),
    ]
    for (suffix, scale) in units where text.hasSuffix(suffix) {
      let digits = text.dropLast(suffix.count)
      guard let n = Int(digits), n >= 0 else { continue }
      let (bytes, overflow) = n.multipliedReportingOverflow(by: scale)
      guard !overflow else { break }
      return bytes
    }
    throw UsageError("\(option): '\(text)' is not a size (examples: 33554432, 64M, 1G)")
  }

  static func parseThreads(_ text: String) throws(UsageError) -> Int {
    guard let n = Int(text), (1...256).contains(n) else {
      throw UsageError("threads: '\(text)' is not a thread count between 1 and 256")
    }
    return n
  }
}

/// A command-line mistake: exit code 2 with the message.
struct UsageError: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}
