import VDiskFUSE

/// The `-o` options of `vdiskfs IMAGE MNT -o a,b,c` (the form mount.fuse3 and fstab use), split
/// into what vdiskfs acts on and what goes to libfuse: the options about opening the image
/// (`OpeningOptions`, which `info` and `map` take too) and those only a mount has. Unknown
/// options are refused rather than silently ignored.
struct ParsedMountOptions: Equatable {
  /// `ro` / `rw`, the last one given wins; read-write is the default.
  var readOnly = false
  var allowOther = false
  var debug = false
  var threads: Int?
  var fsname: String?
  var forceShare = false
  var allowShrink = false
  /// `read_ahead_kb=N`: the mount's read-ahead in KiB (0 leaves the kernel's default).
  var readAheadKilobytes: Int?
  /// `nosplice`: copy read replies through a buffer instead of splicing the image's pages.
  var noSplice = false
  /// `passthrough=auto|off`: let the kernel read and write a qualifying disk.raw's host file
  /// directly (FUSE passthrough). auto (true) by default.
  var passthrough = true
  /// `io_uring=auto|on|off`: serve requests through FUSE-over-io_uring when the kernel offers it
  /// (auto, the default), insist on it (on), or never (off).
  var ioURing: IOURingMode = .auto
  /// Format, caches, backing files, remote stores: what `info` and `map` take as well.
  var opening = OpeningOptions()
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
    for option in OptionValues.split(groups) {
      let (key, value) = OptionValues.keyAndValue(option)
      switch key {
      case "ro": result.readOnly = true
      case "rw": result.readOnly = false
      case "allow_other": result.allowOther = true
      case "debug": result.debug = true
      case "force_share", "noshare": result.forceShare = true
      case "allow_shrink": result.allowShrink = true
      case "threads": result.threads = try parseThreads(try OptionValues.require(value, key))
      case "fsname": result.fsname = try OptionValues.require(value, key)
      case "read_ahead_kb":
        result.readAheadKilobytes = try parseReadAhead(try OptionValues.require(value, key))
      case "nosplice": result.noSplice = true
      case "passthrough": result.passthrough = try parsePassthrough(try OptionValues.require(value, key))
      case "io_uring": result.ioURing = try parseIOURing(try OptionValues.require(value, key))
      case "subtype": result.passThrough.append(option)
      case _ where passThrough.contains(key): result.passThrough.append(option)
      case _ where ignored.contains(key) || key.hasPrefix("x-") || key == "comment": continue
      default:
        guard try OpeningOptionParser.apply(key, value, to: &result.opening) else {
          throw UsageError("unknown mount option '\(option)'", unknownOption: true)
        }
      }
    }
    return result
  }

  /// Whether `option` is one only a mount takes (a known option that is not an opening one).
  static func isMountOnly(_ option: String) -> Bool {
    do {
      var opening = OpeningOptions()
      let (key, value) = OptionValues.keyAndValue(option)
      if try OpeningOptionParser.apply(key, value, to: &opening) { return false }
      _ = try parse([option])
      return true
    } catch {
      return !error.unknownOption
    }
  }

  private static func parseReadAhead(_ text: String) throws(UsageError) -> Int {
    guard let n = Int(text), (0...65536).contains(n) else {
      throw UsageError("read_ahead_kb: '\(text)' is not a number of KiB from 0 to 65536")
    }
    return n
  }

  private static func parsePassthrough(_ text: String) throws(UsageError) -> Bool {
    // Not a `case "…":` list: packaging/test-install.sh reads those lines as option names.
    if text == "auto" { return true }
    if text == "off" { return false }
    throw UsageError("passthrough: '\(text)' is neither auto nor off")
  }

  private static func parseIOURing(_ text: String) throws(UsageError) -> IOURingMode {
    // Not a `case "…":` list: packaging/test-install.sh reads those lines as option names.
    guard let mode = IOURingMode(rawValue: text) else {
      throw UsageError("io_uring: '\(text)' is none of auto, on, off")
    }
    return mode
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
  /// The option is not one vdiskfs knows (rather than a known one with a bad value).
  var unknownOption = false
  init(_ description: String, unknownOption: Bool = false) {
    self.description = description
    self.unknownOption = unknownOption
  }
}
