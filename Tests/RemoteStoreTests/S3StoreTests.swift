import Foundation
import HTTPStore
import RemoteStore
import S3Store
import TestSupport
import Testing
import VDiskCore

/// The S3 store against the radosgw of the test Ceph cluster: SigV4-signed ranged reads
/// byte-compared with the uploaded file, and the refusals (missing bucket or key, bad keys,
/// no credentials, a replaced object).
@Suite struct S3StoreTests {
  /// A bucket of its own per test, with `content` uploaded as `key`.
  static func upload(_ cluster: CephCluster, key: String, _ content: [UInt8]) throws -> String {
    let bucket = "vdiskfs-s3-" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
    try cluster.createBucket(bucket)
    try put(cluster, bucket: bucket, key: key, content)
    return bucket
  }

  static func put(_ cluster: CephCluster, bucket: String, key: String, _ content: [UInt8]) throws {
    let scratch = try Scratch("s3put")
    defer { scratch.remove() }
    try Data(content).write(to: URL(fileURLWithPath: scratch.file("object")))
    // --path-as-is: curl would squash a '..' segment of the key.
    try cluster.s3([
      "--path-as-is", "-T", scratch.file("object"), cluster.url(bucket: bucket, key: S3Location.encode(key)),
    ])
  }

  @Test func readsRangesOfAnObject() throws {
    let cluster = try CephCluster.shared()
    let content = HTTPStoreTests.randomBytes(2 << 20 + 777)
    // A key that needs encoding: a space, '+', a non-ASCII letter, a '..' segment.
    let key = "vm images/ä+disk/../top.qcow2"
    let bucket = try Self.upload(cluster, key: key, content)
    let object = try S3Store.open(
      "s3://\(bucket)/\(key)", options: RemoteOptions(), environment: cluster.environment)
    #expect(object.location == "s3://\(bucket)/\(key)")
    #expect(object.version.size == UInt64(content.count))
    #expect(!object.version.tag.isEmpty)
    let size = content.count
    for (offset, count) in [(0, 512), (4096, 65536), (1 << 20 - 3, 1 << 20), (size - 5, 5), (0, size)] {
      #expect(
        try HTTPStoreTests.fetch(object, UInt64(offset), count) == Array(content[offset..<offset + count]))
    }
    #expect(try HTTPStoreTests.fetch(object, UInt64(size), 10).isEmpty)
    // The RemoteStoreKind entry point reads the process environment: here it has no keys.
    #expect(S3Store.prefixes == ["s3://"])
  }

  @Test func anEmptyObjectOpensWithSizeZero() throws {
    let cluster = try CephCluster.shared()
    let bucket = try Self.upload(cluster, key: "empty", [])
    let object = try S3Store.open(
      "s3://\(bucket)/empty", options: RemoteOptions(), environment: cluster.environment)
    #expect(object.version.size == 0)
    #expect(try HTTPStoreTests.fetch(object, 0, 10).isEmpty)
  }

  @Test func aMissingBucketAndAMissingKeyAreNotFoundAndNamed() throws {
    let cluster = try CephCluster.shared()
    let bucket = try Self.upload(cluster, key: "present", [1, 2, 3])
    let noBucket = #expect(throws: VDiskError.self) {
      try S3Store.open(
        "s3://\(bucket)-absent/present", options: RemoteOptions(), environment: cluster.environment)
    }
    #expect(noBucket?.kind == .notFound)
    #expect(noBucket?.detail == "no such bucket '\(bucket)-absent'")
    let noKey = #expect(throws: VDiskError.self) {
      try S3Store.open("s3://\(bucket)/absent", options: RemoteOptions(), environment: cluster.environment)
    }
    #expect(noKey?.kind == .notFound)
    #expect(noKey?.detail == "no such key 'absent' in bucket '\(bucket)'")
  }

  @Test func refusedCredentialsAreNotPermittedAndNamed() throws {
    let cluster = try CephCluster.shared()
    let bucket = try Self.upload(cluster, key: "k", [1, 2, 3])
    for (name, value, code) in [
      ("AWS_SECRET_ACCESS_KEY", "wrong-secret", "SignatureDoesNotMatch"),
      ("AWS_ACCESS_KEY_ID", "NOSUCHKEYID", "InvalidAccessKeyId"),
    ] {
      var environment = cluster.environment
      environment[name] = value
      let error = #expect(throws: VDiskError.self) {
        try S3Store.open("s3://\(bucket)/k", options: RemoteOptions(), environment: environment)
      }
      #expect(error?.kind == .notPermitted)
      #expect(error?.detail == "credentials refused: \(code)")
    }
  }

  @Test func credentialsAndRegionComeFromTheProfileFiles() throws {
    let cluster = try CephCluster.shared()
    let content = HTTPStoreTests.randomBytes(10_000)
    let bucket = try Self.upload(cluster, key: "d", content)
    let home = try Scratch("s3home")
    defer { home.remove() }
    try home.directory(".aws")
    try """
    [default]
    aws_access_key_id = wrong
    aws_secret_access_key = wrong

    [vdiskfs]
    # the test user
    aws_access_key_id = \(cluster.accessKey)
    aws_secret_access_key=\(cluster.secretKey)
    """.write(toFile: home.file(".aws/credentials"), atomically: true, encoding: .utf8)
    try "[profile vdiskfs]\nregion = us-east-1\n".write(
      toFile: home.file(".aws/config"), atomically: true, encoding: .utf8)
    let environment = ["HOME": home.path, "AWS_PROFILE": "vdiskfs", "AWS_ENDPOINT_URL": cluster.endpoint]
    let object = try S3Store.open("s3://\(bucket)/d", options: RemoteOptions(), environment: environment)
    #expect(try HTTPStoreTests.fetch(object, 100, 5000) == Array(content[100..<5100]))
    // The default profile holds wrong keys: refused by the server, not found missing.
    var withDefault = environment
    withDefault["AWS_PROFILE"] = nil
    let error = #expect(throws: VDiskError.self) {
      try S3Store.open("s3://\(bucket)/d", options: RemoteOptions(), environment: withDefault)
    }
    #expect(error?.kind == .notPermitted)
  }

  /// Without any credentials (no keys in the environment, no AWS files), requests go unsigned:
  /// a public-read object reads, a private one is refused with what to do about it.
  @Test func withoutCredentialsPublicObjectsReadAnonymously() throws {
    let cluster = try CephCluster.shared()
    let content = HTTPStoreTests.randomBytes(70_000)
    let bucket = try Self.upload(cluster, key: "private", [1, 2, 3])
    let scratch = try Scratch("s3public")
    defer { scratch.remove() }
    try Data(content).write(to: URL(fileURLWithPath: scratch.file("object")))
    try cluster.s3([
      "-H", "x-amz-acl: public-read", "-T", scratch.file("object"),
      cluster.url(bucket: bucket, key: "public"),
    ])
    let anonymous = ["HOME": scratch.path, "AWS_ENDPOINT_URL": cluster.endpoint]
    let object = try S3Store.open("s3://\(bucket)/public", options: RemoteOptions(), environment: anonymous)
    #expect(object.version.size == UInt64(content.count))
    #expect(try HTTPStoreTests.fetch(object, 1000, 60_000) == Array(content[1000..<61_000]))
    let refused = #expect(throws: VDiskError.self) {
      try S3Store.open("s3://\(bucket)/private", options: RemoteOptions(), environment: anonymous)
    }
    #expect(refused?.kind == .notPermitted)
    #expect(refused?.detail.hasPrefix("the object is not public") == true, "\(refused.map { "\($0)" } ?? "")")
    #expect(refused?.detail.contains("AWS_ACCESS_KEY_ID") == true)
    // s3_unsigned: unsigned even with good keys at hand.
    var unsigned = RemoteOptions()
    unsigned.s3Unsigned = true
    #expect(throws: VDiskError.self) {
      try S3Store.open("s3://\(bucket)/private", options: unsigned, environment: cluster.environment)
    }
    let signed = try S3Store.open(
      "s3://\(bucket)/private", options: RemoteOptions(), environment: cluster.environment)
    #expect(try HTTPStoreTests.fetch(signed, 0, 3) == [1, 2, 3])
    #expect(
      try HTTPStoreTests.fetch(
        try S3Store.open("s3://\(bucket)/public", options: unsigned, environment: cluster.environment), 0, 10)
        == Array(content[0..<10]))
  }

  /// Half a pair of keys is a mistake, not a wish for anonymous requests: refused before any
  /// request.
  @Test func halfAPairOfKeysIsRefused() throws {
    let home = try Scratch("s3home")
    defer { home.remove() }
    for (name, other) in [
      ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"),
    ] {
      let error = #expect(throws: VDiskError.self) {
        try S3Store.open(
          "s3://b/k", options: RemoteOptions(),
          environment: ["HOME": home.path, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", name: "x"])
      }
      #expect(error?.kind == .notPermitted)
      #expect(
        error?.detail.hasPrefix("\(name) is set but \(other) is not") == true,
        "\(error.map { "\($0)" } ?? "")")
    }
  }

  @Test func anObjectReplacedWhileOpenFailsAsChanged() throws {
    let cluster = try CephCluster.shared()
    let first = HTTPStoreTests.randomBytes(100_000)
    let bucket = try Self.upload(cluster, key: "d", first)
    let object = try S3Store.open(
      "s3://\(bucket)/d", options: RemoteOptions(), environment: cluster.environment)
    #expect(try HTTPStoreTests.fetch(object, 0, 4096) == Array(first[0..<4096]))
    try Self.put(cluster, bucket: bucket, key: "d", HTTPStoreTests.randomBytes(100_000))
    let failure = #expect(throws: RemoteFailure.self) { try HTTPStoreTests.fetch(object, 0, 4096) }
    #expect(failure?.kind == .changed)
  }

  @Test func anUnreachableEndpointFailsTheOpenQuickly() throws {
    var options = RemoteOptions()
    options.timeoutSeconds = 2
    options.s3Endpoint = "http://127.0.0.1:\(try NginxServer.freePort())"
    let start = ContinuousClock.now
    let error = #expect(throws: VDiskError.self) {
      try S3Store.open(
        "s3://b/k", options: options, environment: ["AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"])
    }
    #expect(error?.kind == .io)
    #expect(error?.detail.hasPrefix("cannot reach 127.0.0.1:") == true)
    #expect(ContinuousClock.now - start < .seconds(5))
  }
}
