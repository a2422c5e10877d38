import Glibc
import RemoteStore
import VDiskCore

/// Where and as whom S3 requests go, from the options, the environment and the AWS shared files,
/// the way the AWS CLI looks them up. The environment is a parameter, so that tests need not
/// change the process's.
public struct S3Configuration: Sendable, Equatable {
  /// `http(s)://host[:port][/prefix]` without a trailing '/'; nil: AWS's regional endpoint.
  public var endpoint: String?
  public var region: String
  public var accessKeyID: String
  public var secretAccessKey: String
  public var sessionToken: String?

  /// Endpoint: `options.s3Endpoint`, `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`. Region:
  /// `options.s3Region`, `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region` in the config
  /// file (`AWS_CONFIG_FILE`, else `$HOME/.aws/config`), `us-east-1`. Credentials:
  /// `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`), else the profile
  /// `AWS_PROFILE` (default `default`) of the credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
  /// `$HOME/.aws/credentials`), else of the config file. Throws `.notPermitted` without
  /// credentials, `.invalidArgument` for an endpoint that is not an http(s) URL.
  public init(location: String, options: RemoteOptions, environment: [String: String]) throws {
    func env(_ name: String) -> String? { environment[name].flatMap { $0.isEmpty ? nil : $0 } }
    let home = env("HOME")
    let profile = env("AWS_PROFILE") ?? "default"
    let configPath = env("AWS_CONFIG_FILE") ?? home.map { $0 + "/.aws/config" }
    let config = configPath.flatMap(readSmallFile).map(INIFile.init)
    let configSection = profile == "default" ? "default" : "profile \(profile)"

    if let endpoint = options.s3Endpoint ?? env("AWS_ENDPOINT_URL_S3") ?? env("AWS_ENDPOINT_URL") {
      var trimmed = Substring(endpoint)
      while trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
      guard trimmed.hasPrefix("http://") || trimmed.hasPrefix("https://"),
        trimmed.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7F })
      else {
        throw VDiskError(
          .invalidArgument, path: location, "the S3 endpoint '\(endpoint)' is not an http(s):// URL")
      }
      self.endpoint = String(trimmed)
    }
    region =
      options.s3Region ?? env("AWS_REGION") ?? env("AWS_DEFAULT_REGION") ?? config?[configSection, "region"]
      ?? "us-east-1"
    guard region.utf8.allSatisfy({ S3Location.isUnreserved($0) }), !region.isEmpty else {
      throw VDiskError(.invalidArgument, path: location, "the S3 region '\(region)' is not valid")
    }

    if let key = env("AWS_ACCESS_KEY_ID"), let secret = env("AWS_SECRET_ACCESS_KEY") {
      accessKeyID = key
      secretAccessKey = secret
      sessionToken = env("AWS_SESSION_TOKEN")
      return
    }
    let credentialsPath = env("AWS_SHARED_CREDENTIALS_FILE") ?? home.map { $0 + "/.aws/credentials" }
    let credentials = credentialsPath.flatMap(readSmallFile).map(INIFile.init)
    for (file, section) in [(credentials, profile), (config, configSection)] {
      if let key = file?[section, "aws_access_key_id"], let secret = file?[section, "aws_secret_access_key"],
        !key.isEmpty, !secret.isEmpty
      {
        accessKeyID = key
        secretAccessKey = secret
        sessionToken = file?[section, "aws_session_token"]
        return
      }
    }
    throw VDiskError(
      .notPermitted, path: location,
      "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give profile '\(profile)' "
        + "keys in \(credentialsPath ?? "~/.aws/credentials")")
  }

  /// The process environment, for `init`.
  public static var processEnvironment: [String: String] {
    var result: [String: String] = [:]
    var entry = environ
    while let pointer = entry.pointee {
      let text = String(cString: pointer)
      if let equals = text.firstIndex(of: "=") {
        result[String(text[..<equals])] = String(text[text.index(after: equals)...])
      }
      entry += 1
    }
    return result
  }
}

/// The text of a small file (at most 1 MiB), or nil when it is missing, unreadable or larger.
func readSmallFile(_ path: String) -> String? {
  let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
  guard fd >= 0 else { return nil }
  defer { close(fd) }
  let limit = 1 << 20
  var bytes: [UInt8] = []
  var chunk = [UInt8](repeating: 0, count: 65536)
  while true {
    let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    if n < 0 && errno == EINTR { continue }
    guard n >= 0 else { return nil }
    if n == 0 { break }
    bytes += chunk[0..<n]
    guard bytes.count <= limit else { return nil }
  }
  return String(decoding: bytes, as: UTF8.self)
}
