import Foundation
import RemoteStore
import TestSupport
import Testing
import VDiskCore

@testable import S3Store

/// S3 locations, key encoding, error documents, the AWS shared files and the order in which
/// options, environment and files are consulted: no server needed.
@Suite struct S3ConfigurationTests {
  static let keys = ["AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"]

  @Test func locationsAreParsedAndChecked() throws {
    let location = try S3Location("s3://my-bucket/vm/disk.qcow2")
    #expect(location.bucket == "my-bucket" && location.key == "vm/disk.qcow2")
    for bad in [
      "s3://", "s3://bucket", "s3://bucket/", "s3:///key", "s3://bucket?/k", "s3://b a/k", "s3://b/k\u{1}",
      "http://b/k",
    ] {
      #expect(throws: VDiskError.self, "\(bad)") { try S3Location(bad) }
    }
    #expect(throws: VDiskError.self) { try S3Location("s3://b/" + String(repeating: "k", count: 1025)) }
  }

  @Test func keysAreEncodedOnceKeepingSlashes() {
    #expect(S3Location.encode("a/b c+d/ä~_.-") == "a/b%20c%2Bd/%C3%A4~_.-")
    #expect(S3Location.encode("x%2F=?#&") == "x%252F%3D%3F%23%26")
  }

  @Test func urlsArePathStyleAtAnEndpointAndVirtualHostedAtAWS() throws {
    let location = try S3Location("s3://bucket/a b")
    #expect(
      location.url(endpoint: "http://127.0.0.1:7480", region: "r") == "http://127.0.0.1:7480/bucket/a%20b")
    #expect(
      location.url(endpoint: nil, region: "eu-west-1") == "https://bucket.s3.eu-west-1.amazonaws.com/a%20b")
    let dotted = try S3Location("s3://my.bucket/k")
    #expect(
      dotted.url(endpoint: nil, region: "us-east-1") == "https://s3.us-east-1.amazonaws.com/my.bucket/k")
  }

  @Test func errorCodesAreScannedStrictly() {
    let document = "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>x</Message></Error>"
    #expect(s3ErrorCode(Array(document.utf8)) == "NoSuchKey")
    #expect(s3ErrorCode(Array("<Code>No Such</Code>".utf8)) == nil)
    #expect(s3ErrorCode(Array("<Code>NoEnd".utf8)) == nil)
    #expect(s3ErrorCode(Array("<Code></Code>".utf8)) == nil)
    #expect(s3ErrorCode(Array(("<Code>" + String(repeating: "A", count: 65) + "</Code>").utf8)) == nil)
    #expect(s3ErrorCode([]) == nil)
  }

  @Test func iniFilesKeepSectionsAndSkipJunk() {
    let ini = INIFile(
      """
      # comment
      stray = before any section
      [default]
      aws_access_key_id = A
        indented = skipped
      ; another comment
      [profile x]\r
      Region=eu-central-1\r
      [broken
      key = lost
      """)
    #expect(ini["default", "aws_access_key_id"] == "A")
    #expect(ini["default", "indented"] == nil)
    #expect(ini["profile x", "region"] == "eu-central-1")
    #expect(ini.sections.count == 2)
  }

  @Test func optionsWinOverTheEnvironmentWhichWinsOverFiles() throws {
    let home = try Scratch("s3conf")
    defer { home.remove() }
    try home.directory(".aws")
    try "[default]\nregion = from-file\n".write(
      toFile: home.file(".aws/config"), atomically: true, encoding: .utf8)
    var environment = Self.keys
    environment["HOME"] = home.path
    var options = RemoteOptions()
    var config = try S3Configuration(location: "s3://b/k", options: options, environment: environment)
    #expect(config.region == "from-file" && config.endpoint == nil && config.accessKeyID == "id")
    environment["AWS_DEFAULT_REGION"] = "default-region"
    environment["AWS_ENDPOINT_URL"] = "http://general:1/"
    config = try S3Configuration(location: "s3://b/k", options: options, environment: environment)
    #expect(config.region == "default-region" && config.endpoint == "http://general:1")
    environment["AWS_REGION"] = "region"
    environment["AWS_ENDPOINT_URL_S3"] = "http://s3-only:2"
    config = try S3Configuration(location: "s3://b/k", options: options, environment: environment)
    #expect(config.region == "region" && config.endpoint == "http://s3-only:2")
    options.s3Region = "option-region"
    options.s3Endpoint = "https://option:3"
    config = try S3Configuration(location: "s3://b/k", options: options, environment: environment)
    #expect(config.region == "option-region" && config.endpoint == "https://option:3")
    config = try S3Configuration(location: "s3://b/k", options: RemoteOptions(), environment: Self.keys)
    #expect(config.region == "us-east-1")
    options.s3Endpoint = "ftp://x"
    #expect(throws: VDiskError.self) {
      try S3Configuration(location: "s3://b/k", options: options, environment: environment)
    }
  }

  /// No keys anywhere: anonymous, saying why; `s3_unsigned`: anonymous whatever is set; one key
  /// of a pair (in the environment or a profile): refused.
  @Test func credentialsAreAllNoneOrRefused() throws {
    let home = try Scratch("s3conf")
    defer { home.remove() }
    let none = try S3Configuration(
      location: "s3://b/k", options: RemoteOptions(), environment: ["HOME": home.path])
    #expect(none.credentials == nil)
    #expect(none.anonymousReason?.hasPrefix("no S3 credentials") == true)
    var unsigned = RemoteOptions()
    unsigned.s3Unsigned = true
    let forced = try S3Configuration(location: "s3://b/k", options: unsigned, environment: Self.keys)
    #expect(forced.credentials == nil && forced.anonymousReason == "-o s3_unsigned")
    #expect(throws: VDiskError.self) {
      try S3Configuration(
        location: "s3://b/k", options: RemoteOptions(), environment: ["AWS_ACCESS_KEY_ID": "id"])
    }
    try home.directory(".aws")
    try "[default]\naws_secret_access_key = s\n".write(
      toFile: home.file(".aws/credentials"), atomically: true, encoding: .utf8)
    let half = #expect(throws: VDiskError.self) {
      try S3Configuration(location: "s3://b/k", options: RemoteOptions(), environment: ["HOME": home.path])
    }
    #expect(half?.kind == .notPermitted)
    #expect(half?.detail.contains("only one of aws_access_key_id and aws_secret_access_key") == true)
  }

  @Test func sessionTokensComeWithTheirKeys() throws {
    var environment = Self.keys
    environment["AWS_SESSION_TOKEN"] = "token"
    let config = try S3Configuration(location: "s3://b/k", options: RemoteOptions(), environment: environment)
    #expect(config.sessionToken == "token")
    let home = try Scratch("s3conf")
    defer { home.remove() }
    try home.directory(".aws")
    try "[p]\naws_access_key_id=i\naws_secret_access_key=s\naws_session_token=t\n".write(
      toFile: home.file("creds"), atomically: true, encoding: .utf8)
    let fromFile = try S3Configuration(
      location: "s3://b/k", options: RemoteOptions(),
      environment: ["AWS_SHARED_CREDENTIALS_FILE": home.file("creds"), "AWS_PROFILE": "p"])
    #expect(fromFile.accessKeyID == "i" && fromFile.secretAccessKey == "s" && fromFile.sessionToken == "t")
  }
}
