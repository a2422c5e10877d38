import ImageFormats
import Logging
import RemoteStore
import RemoteStores

/// The `-o` options about opening an image and its chain (format, metadata cache, where backing
/// files may lie, how remote stores are reached), which `mount`, `info` and `map` all take. The
/// options only a mount means something by (`ro`, `allow_other`, `threads`, …) are
/// `MountOptionParser`'s; `info` and `map` refuse them.
struct OpeningOptions: Equatable {
  var format: String?
  var cacheSize: Int?
  /// `backing_dir=DIR`: every backing file and extent file must resolve inside DIR.
  var backingDirectory: String?
  /// `nobacking`: open the top image only (unallocated ranges read as zeros); read-only.
  var noBacking = false
  /// How remote images are reached and cached (`ceph_conf`, `ceph_id`, `s3_endpoint`,
  /// `s3_region`, `s3_unsigned`, `sslverify`, `remote_cache`, `cache_dir`, `connections`,
  /// `remote_timeout`).
  var remote = RemoteOptions()
  /// `remote_backing`: a local image may name a backing file in a remote store.
  var remoteBacking = false

  /// The `OpenOptions` these give (the standard stores; `format` and `cacheSize` stated on the
  /// command line win over the `-o` ones). Throws `CLIFailure` (exit 2) for a bad value.
  func openOptions(format stated: String? = nil, cacheSize statedSize: String? = nil) throws -> OpenOptions {
    var options = OpenOptions()
    options.stores = .standard
    options.format = try FormatOption.parse(stated ?? format)
    options.backingDirectory = backingDirectory
    options.openBacking = !noBacking
    options.remote = remote
    options.allowRemoteBacking = remoteBacking
    if let statedSize {
      do {
        options.cacheSize = try OptionValues.size(statedSize, option: "--cache-size")
      } catch {
        throw CLIFailure(code: ExitCodes.usage, message: error.description)
      }
    } else {
      options.cacheSize = cacheSize
    }
    return options
  }

  /// What the options make worth a warning before anything is opened.
  func logWarnings(_ logger: Logger) {
    if !remote.verifyTLS {
      logger.warning("sslverify=off: TLS certificates of remote images are not verified")
    }
  }

  /// `-o` of `info` and `map`, for their `--help`.
  static let help = "Options about opening the image, comma-separated, as a mount takes them (see below)."

  /// The `-o` options of `info` and `map`, for their `--help`.
  static let discussion = """
    -o options (a mount's options about opening the image): format=FMT, cache_size=SIZE, \
    backing_dir=DIR, nobacking, remote_backing (a local image's backing file may be in a remote \
    store), and for remote images ceph_conf=FILE, ceph_id=NAME, s3_endpoint=URL, s3_region=REGION, \
    s3_unsigned (anonymous S3 requests even when credentials exist), sslverify=off, \
    remote_cache=SIZE, cache_dir=DIR, connections=N, remote_timeout=SECONDS. Options only a \
    mount has (ro, rw, allow_other, threads, fsname, …) are refused (exit 2).
    """
}

enum OpeningOptionParser {
  /// Applies `option` (`key` or `key=value`) when it is an opening option; false when it is not.
  static func apply(_ key: String, _ value: String?, to result: inout OpeningOptions) throws(UsageError)
    -> Bool
  {
    switch key {
    case "format": result.format = try OptionValues.require(value, key)
    case "cache_size", "cache-size":
      result.cacheSize = try OptionValues.size(OptionValues.require(value, key), option: key)
    case "backing_dir": result.backingDirectory = try OptionValues.require(value, key)
    case "nobacking": result.noBacking = true
    case "ceph_conf": result.remote.cephConf = try OptionValues.require(value, key)
    case "ceph_id": result.remote.cephID = try OptionValues.require(value, key)
    case "s3_endpoint": result.remote.s3Endpoint = try OptionValues.require(value, key)
    case "s3_region": result.remote.s3Region = try OptionValues.require(value, key)
    case "s3_unsigned": result.remote.s3Unsigned = true
    case "sslverify":
      result.remote.verifyTLS = try OptionValues.switchValue(OptionValues.require(value, key), key)
    case "remote_cache":
      result.remote.cacheBytes = try OptionValues.size(OptionValues.require(value, key), option: key)
    case "cache_dir": result.remote.cacheDirectory = try OptionValues.require(value, key)
    case "connections":
      result.remote.connections = try OptionValues.count(OptionValues.require(value, key), key, 1...64)
    case "remote_timeout":
      result.remote.timeoutSeconds = try OptionValues.count(OptionValues.require(value, key), key, 1...3600)
    case "remote_backing": result.remoteBacking = true
    default: return false
    }
    return true
  }

  /// The `-o` options of `vdiskfs info` and `vdiskfs map`: opening options only. A mount option
  /// is refused by name, anything else as unknown.
  static func parse(_ groups: [String], command: String) throws(UsageError) -> OpeningOptions {
    var result = OpeningOptions()
    for option in OptionValues.split(groups) {
      let (key, value) = OptionValues.keyAndValue(option)
      guard try !apply(key, value, to: &result) else { continue }
      if MountOptionParser.isMountOnly(option) {
        throw UsageError(
          "'\(key)' is a mount option; vdiskfs \(command) takes only the options about opening the image "
            + "(format, cache_size, backing_dir, nobacking, remote_backing and the remote-store options)")
      }
      throw UsageError("unknown option '\(option)'")
    }
    return result
  }
}

extension OpeningOptionParser {
  /// `parse` for a command's `run`: a mistake is a `CLIFailure` with exit code 2.
  static func parseForCommand(_ groups: [String], command: String) throws -> OpeningOptions {
    do {
      return try parse(groups, command: command)
    } catch {
      throw CLIFailure(code: ExitCodes.usage, message: error.description)
    }
  }
}

/// Parsing of `-o` option lists and values, for `MountOptionParser` and `OpeningOptionParser`.
enum OptionValues {
  /// `-o a,b -o c`: every option, in order, empty ones dropped.
  static func split(_ groups: [String]) -> [String] {
    groups.flatMap { $0.split(separator: ",").map(String.init) }.filter { !$0.isEmpty }
  }

  static func keyAndValue(_ option: String) -> (String, String?) {
    guard let eq = option.firstIndex(of: "=") else { return (option, nil) }
    return (String(option[..<eq]), String(option[option.index(after: eq)...]))
  }

  static func require(_ value: String?, _ key: String) throws(UsageError) -> String {
    guard let value, !value.isEmpty else {
      throw UsageError("option '\(key)' needs a value (\(key)=…)")
    }
    return value
  }

  static func switchValue(_ text: String, _ key: String) throws(UsageError) -> Bool {
    if ["on", "yes", "true", "1"].contains(text) { return true }
    if ["off", "no", "false", "0"].contains(text) { return false }
    throw UsageError("\(key): '\(text)' is not on or off")
  }

  static func count(_ text: String, _ key: String, _ range: ClosedRange<Int>) throws(UsageError) -> Int {
    guard let n = Int(text), range.contains(n) else {
      throw UsageError("\(key): '\(text)' is not a number from \(range.lowerBound) to \(range.upperBound)")
    }
    return n
  }

  /// Parses `65536`, `64K`, `64k`, `32M`, `32MiB`, `1G` into bytes.
  static func size(_ text: String, option: String) throws(UsageError) -> Int {
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
}
