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
  /// Nil: requests go unsigned (anonymous), for public objects.
  public var credentials: Credentials?

  public struct Credentials: Sendable, Equatable {
    public var accessKeyID: String
    public var secretAccessKey: String
    public var sessionToken: String?
  }

  public var accessKeyID: String? { credentials?.accessKeyID }
  public var secretAccessKey: String? { credentials?.secretAccessKey }
  public var sessionToken: String? { credentials?.sessionToken }
  /// Why requests go unsigned, when they do: `-o s3_unsigned`, or no credentials anywhere.
  public var anonymousReason: String?

  /// Endpoint: `options.s3Endpoint`, `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`. Region:
  /// `options.s3Region`, `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region` in the config
  /// file (`AWS_CONFIG_FILE`, else `$HOME/.aws/config`), `us-east-1`. Credentials:
  /// `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`), else the profile
  /// `AWS_PROFILE` (default `default`) of the credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
  /// `$HOME/.aws/credentials`), else of the config file; with none of these, or with
  /// `options.s3Unsigned`, none (anonymous requests). Throws `.notPermitted` for half a pair of
  /// keys (one of the two variables, or a profile with one of the two keys) rather than going
  /// anonymous unasked, `.invalidArgument` for an endpoint that is not an http(s) URL.
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

    if options.s3Unsigned {
      anonymousReason = "-o s3_unsigned"
      return
    }
    switch (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
    case (let key?, let secret?):
      credentials = Credentials(
        accessKeyID: key, secretAccessKey: secret, sessionToken: env("AWS_SESSION_TOKEN"))
      return
    case (.some, nil), (nil, .some):
      let (set, unset) =
        env("AWS_ACCESS_KEY_ID") != nil
        ? ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") : ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
      throw VDiskError(
        .notPermitted, path: location,
        "\(set) is set but \(unset) is not: set both, or neither (-o s3_unsigned for anonymous requests)")
    case (nil, nil): break
    }
    let credentialsPath = env("AWS_SHARED_CREDENTIALS_FILE") ?? home.map { $0 + "/.aws/credentials" }
    let credentialsFile = credentialsPath.flatMap(readSmallFile).map(INIFile.init)
    for (file, section, path) in [
      (credentialsFile, profile, credentialsPath), (config, configSection, configPath),
    ] {
      let key = file?[section, "aws_access_key_id"].flatMap { $0.isEmpty ? nil : $0 }
      let secret = file?[section, "aws_secret_access_key"].flatMap { $0.isEmpty ? nil : $0 }
      if let key, let secret {
        credentials = Credentials(
          accessKeyID: key, secretAccessKey: secret, sessionToken: file?[section, "aws_session_token"])
        return
      }
      if key != nil || secret != nil {
        throw VDiskError(
          .notPermitted, path: location,
          "profile '\(profile)' in \(path ?? "the AWS files") has only one of aws_access_key_id and "
            + "aws_secret_access_key: give both, or neither (-o s3_unsigned for anonymous requests)")
      }
    }
    anonymousReason =
      "no S3 credentials (AWS_ACCESS_KEY_ID, profile '\(profile)' in \(credentialsPath ?? "~/.aws/credentials"))"
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
