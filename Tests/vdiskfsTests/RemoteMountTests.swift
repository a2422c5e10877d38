import Foundation
import Synchronization
import TestSupport
import Testing

/// Images mounted by the real binary from S3 (the test cluster's radosgw) and HTTP (nginx), each
/// compared with `qemu-img convert -O raw` of the local file.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct RemoteMountTests {
  /// Uploads every file in `scratch` to `bucket`, keyed by its absolute path without the leading
  /// `/`, so that names the images record (relative or absolute) resolve in the bucket.
  static func upload(_ scratch: Scratch, to bucket: String, in cluster: CephCluster) throws {
    for name in try FileManager.default.contentsOfDirectory(atPath: scratch.path) {
      let path = scratch.file(name)
      var isDirectory: ObjCBool = false
      guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue
      else { continue }
      try cluster.putObject(bucket: bucket, key: String(path.dropFirst()), file: path)
    }
  }

  static func s3Location(_ bucket: String, _ path: String) -> String { "s3://\(bucket)\(path)" }

  /// Reads `count` bytes at `offset` of `file` with O_DIRECT (past the page cache, to the daemon).
  static func directRead(_ file: String, offset: Int, count: Int) -> (status: Int32, bytes: [UInt8]) {
    let fd = open(file, O_RDONLY | 0o40000)  // O_DIRECT on x86-64
    guard fd >= 0 else { return (errno, []) }
    defer { close(fd) }
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 4096)
    defer { buffer.deallocate() }
    let n = pread(fd, buffer, count, off_t(offset))
    guard n >= 0 else { return (errno, []) }
    return (0, [UInt8](UnsafeRawBufferPointer(start: buffer, count: n)))
  }

  @Test(arguments: MountMatrixTests.formatFixtures + MountMatrixTests.fixtures.prefix(3))
  func everyFormatMountsFromS3(_ fixture: MountMatrixTests.Fixture) throws {
    let cluster = try CephCluster.shared()
    let scratch = try Scratch("s3-matrix")
    defer { scratch.remove() }
    let image = try fixture.make(scratch)
    let bucket = "matrix-\(UUID().uuidString.prefix(8).lowercased())"
    try cluster.createBucket(bucket)
    try Self.upload(scratch, to: bucket, in: cluster)
    let oracle = try Qemu.rawFile(of: image, format: fixture.format, scratch: scratch)
    let mounted = try MountedImage.mount(
      Self.s3Location(bucket, image), in: scratch, environment: cluster.environment)
    defer { mounted.unmount() }
    #expect(try compareFiles(mounted.diskRaw, oracle) == nil)
    #expect(try statFile(mounted.diskRaw).st_size == statFile(oracle).st_size)
  }

  @Test func aChainAndASplitVMDKMountOverHTTP() throws {
    let scratch = try Scratch("http-mount")
    defer { scratch.remove() }
    let server = try NginxServer()
    defer { server.stop() }
    let base = server.root + "/base.qcow2"
    try Qemu.create(base, size: "16M")
    try Qemu.io(base, ["write -P 0x11 0 8M"])
    let top = server.root + "/top.qcow2"
    try Qemu.create(top, size: "16M", backing: "base.qcow2", backingFormat: "qcow2")
    try Qemu.io(top, ["write -P 0x22 4M 1M"])
    let split = server.root + "/split.vmdk"
    try Qemu.create(split, format: "vmdk", size: "12M", options: ["subformat=twoGbMaxExtentFlat"])
    try Qemu.io(split, format: "vmdk", ["write -P 0x33 1M 3M"])
    for (name, image, format) in [("top.qcow2", top, "qcow2"), ("split.vmdk", split, "vmdk")] {
      let oracle = try Qemu.rawFile(of: image, format: format, scratch: scratch)
      let mounted = try MountedImage.mount(server.url(name), in: scratch)
      defer { mounted.unmount() }
      #expect(try compareFiles(mounted.diskRaw, oracle) == nil, "\(name)")
    }
  }

  @Test func aLocalOverlayOverAnS3BaseIsWritableAndTheBaseIsNeverWritten() throws {
    let cluster = try CephCluster.shared()
    let scratch = try Scratch("s3-overlay")
    defer { scratch.remove() }
    let base = scratch.file("base.qcow2")
    try Qemu.create(base, size: "16M")
    try Qemu.io(base, ["write -P 0x44 0 16M"])
    let bucket = "overlay-\(UUID().uuidString.prefix(8).lowercased())"
    try cluster.createBucket(bucket)
    try cluster.putObject(bucket: bucket, key: "base.qcow2", file: base)
    let location = "s3://\(bucket)/base.qcow2"
    let overlay = scratch.file("overlay.qcow2")
    do {
      let mounted = try MountedImage.mount(
        location, in: scratch, ["--overlay", overlay], writable: true, environment: cluster.environment)
      defer { mounted.unmount() }
      try run(
        "dd", ["if=/dev/zero", "of=\(mounted.diskRaw)", "bs=64k", "seek=16", "count=4", "conv=notrunc,fsync"])
    }
    // The overlay names the remote base; a plain mount of it needs -o remote_backing.
    let refused = try run(
      "env",
      cluster.environment.map { "\($0.key)=\($0.value)" } + [
        vdiskfsBinary, overlay, scratch.path, "-o", "ro",
      ],
      check: false)
    #expect(refused.status != 0)
    #expect(refused.stderr.contains("remote_backing"), "\(refused.stderr)")
    let expected = scratch.file("expected.qcow2")
    try Qemu.create(expected, size: "16M")
    try Qemu.io(expected, ["write -P 0x44 0 16M", "write -z 1M 256k"])
    do {
      let mounted = try MountedImage.mount(
        overlay, in: scratch, ["-o", "ro,remote_backing"], environment: cluster.environment)
      defer { mounted.unmount() }
      #expect(try compareFiles(mounted.diskRaw, try Qemu.rawFile(of: expected, scratch: scratch)) == nil)
    }
    // QEMU's judgment: point the overlay at a local copy of the base.
    _ = try Qemu.img("rebase", "-u", "-b", base, "-F", "qcow2", overlay)
    _ = try Qemu.img("check", overlay)
    _ = try Qemu.img("compare", overlay, expected)
    let stored = scratch.file("stored.qcow2")
    try cluster.getObject(bucket: bucket, key: "base.qcow2", to: stored)
    #expect(try compareFiles(stored, base) == nil)
  }

  @Test func missingBucketsKeysAndRefusedCredentialsFailWithOneClearMessage() throws {
    let cluster = try CephCluster.shared()
    let scratch = try Scratch("s3-errors")
    defer { scratch.remove() }
    let bucket = "errors-\(UUID().uuidString.prefix(8).lowercased())"
    try cluster.createBucket(bucket)
    func attempt(_ location: String, _ environment: [String: String]) throws -> CommandResult {
      try run(
        "env",
        environment.map { "\($0.key)=\($0.value)" } + [
          "timeout", "60", vdiskfsBinary, location, scratch.path,
        ],
        check: false)
    }
    let noBucket = try attempt("s3://no-such-bucket-\(bucket)/a.qcow2", cluster.environment)
    #expect(noBucket.status == 3)
    #expect(noBucket.stderr.contains("bucket"), "\(noBucket.stderr)")
    let noKey = try attempt("s3://\(bucket)/missing.qcow2", cluster.environment)
    #expect(noKey.status == 3)
    #expect(noKey.stderr.contains("missing.qcow2"), "\(noKey.stderr)")
    var wrong = cluster.environment
    wrong["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    let refused = try attempt("s3://\(bucket)/missing.qcow2", wrong)
    #expect(refused.status == 1)
    #expect(refused.stderr.contains("credentials refused"), "\(refused.stderr)")
    var unreachable = cluster.environment
    unreachable["AWS_ENDPOINT_URL"] = "http://127.0.0.1:\(try NginxServer.freePort())"
    let start = Date()
    let down = try attempt("s3://\(bucket)/a.qcow2", unreachable)
    #expect(down.status == 1)
    #expect(Date().timeIntervalSince(start) < 30)
    for r in [noBucket, noKey, refused, down] {
      #expect(r.stderr.split(separator: "\n").count == 1, "one line: \(r.stderr)")
    }
  }

  @Test func aStoppedGatewayFailsThatReadAndTheMountResumesWhenItIsBack() throws {
    let cluster = try CephCluster.start()
    defer { try? cluster.stop() }
    let scratch = try Scratch("s3-gateway")
    defer { scratch.remove() }
    let raw = scratch.file("disk.raw")
    try Data((0..<(32 << 20)).map { UInt8(truncatingIfNeeded: $0 >> 12) }).write(
      to: URL(fileURLWithPath: raw))
    try cluster.createBucket("fault")
    try cluster.putObject(bucket: "fault", key: "disk.raw", file: raw)
    let mounted = try MountedImage.mount(
      "s3://fault/disk.raw", in: scratch, ["-o", "ro,format=raw,remote_timeout=2"],
      environment: cluster.environment)
    defer { mounted.unmount() }
    let expected = try [UInt8](Data(contentsOf: URL(fileURLWithPath: raw)))
    #expect(Self.directRead(mounted.diskRaw, offset: 0, count: 65536).bytes == Array(expected[0..<65536]))
    try cluster.stopGateway()
    let failed = Self.directRead(mounted.diskRaw, offset: 24 << 20, count: 65536)
    #expect(failed.status == EIO)
    #expect(isMounted(mounted.mountpoint))
    try cluster.startGateway()
    let again = Self.directRead(mounted.diskRaw, offset: 24 << 20, count: 65536)
    #expect(again.status == 0)
    #expect(again.bytes == Array(expected[(24 << 20)..<((24 << 20) + 65536)]))
  }

  @Test func anObjectReplacedWhileMountedFailsReadsRatherThanMixingVersions() throws {
    let cluster = try CephCluster.shared()
    let scratch = try Scratch("s3-replaced")
    defer { scratch.remove() }
    let bucket = "replaced-\(UUID().uuidString.prefix(8).lowercased())"
    try cluster.createBucket(bucket)
    let raw = scratch.file("disk.raw")
    try Data([UInt8](repeating: 0x55, count: 8 << 20)).write(to: URL(fileURLWithPath: raw))
    try cluster.putObject(bucket: bucket, key: "disk.raw", file: raw)
    let mounted = try MountedImage.mount(
      "s3://\(bucket)/disk.raw", in: scratch, ["-o", "ro,format=raw"], environment: cluster.environment)
    defer { mounted.unmount() }
    #expect(
      Self.directRead(mounted.diskRaw, offset: 0, count: 4096).bytes == [UInt8](repeating: 0x55, count: 4096))
    try Data([UInt8](repeating: 0x66, count: 8 << 20)).write(to: URL(fileURLWithPath: raw))
    try cluster.putObject(bucket: bucket, key: "disk.raw", file: raw)
    #expect(Self.directRead(mounted.diskRaw, offset: 6 << 20, count: 4096).status == EIO)
    // Cached bytes of the old version are not served either.
    #expect(Self.directRead(mounted.diskRaw, offset: 0, count: 4096).status == EIO)
    #expect(isMounted(mounted.mountpoint))
  }

  /// How the scripted server of `slowAnswersFailThatReadAndTheMountSurvives` answers reads of
  /// the object's second block.
  enum Answer: Sendable { case honest, stallAfterHeaders, stallMidBody, trickle }

  /// The answer of the moment, shared with the server's threads.
  final class CurrentAnswer: Sendable {
    private let value = Mutex(Answer.honest)
    func set(_ answer: Answer) { value.withLock { $0 = answer } }
    var answer: Answer { value.withLock { $0 } }
  }

  /// A server that answers the second block's reads and then stalls (after the headers, or half
  /// way through the body), or trickles a byte a second: each read of it fails with EIO within
  /// the retries' bounded time (5 tries of at most 2 s + 512 bytes at 4 KiB/s with
  /// remote_timeout=1), the first block stays readable, and once the server answers honestly
  /// the same read succeeds. A cache of one block (remote_cache=0): the partition scan at mount
  /// reads the last block, and a read of the first must evict it for the next read to fetch.
  @Test func slowAnswersFailThatReadAndTheMountSurvives() throws {
    let scratch = try Scratch("http-slow")
    defer { scratch.remove() }
    let size = (1 << 20) + 512
    let content = (0..<size).map { UInt8(truncatingIfNeeded: $0 / 7) }
    let current = CurrentAnswer()
    let server = try HTTPScriptedServer { request -> [HTTPScriptedServer.Step] in
      let common = ["ETag: \"v1\"", "Accept-Ranges: bytes"]
      if request.hasPrefix("HEAD ") {
        return [.send(HTTPScriptedServer.answer("200 OK", common + ["Content-Length: \(size)"]))]
      }
      guard let (first, last) = HTTPScriptedServer.range(in: request), first <= last, last < size else {
        return [.send(HTTPScriptedServer.answer("416 Range Not Satisfiable", ["Content-Length: 0"]))]
      }
      let head = HTTPScriptedServer.answer(
        "206 Partial Content",
        common + ["Content-Range: bytes \(first)-\(last)/\(size)", "Content-Length: \(last - first + 1)"])
      let body = Array(content[Int(first)...Int(last)])
      switch first < 1 << 20 ? .honest : current.answer {
      case .honest: return [.send(head + body)]
      case .stallAfterHeaders: return [.send(head), .hold]
      case .stallMidBody: return [.send(head + body.prefix(body.count / 2)), .hold]
      case .trickle: return [.send(head), .trickle(body, interval: .seconds(1))]
      }
    }
    defer { server.stop() }
    let mounted = try MountedImage.mount(
      server.url, in: scratch, ["-o", "ro,format=raw,remote_timeout=1,remote_cache=0"])
    defer { mounted.unmount() }
    #expect(Self.directRead(mounted.diskRaw, offset: 0, count: 65536).bytes == Array(content[0..<65536]))
    for behaviour in [Answer.stallAfterHeaders, .stallMidBody, .trickle] {
      current.set(behaviour)
      let start = ContinuousClock.now
      let failed = Self.directRead(mounted.diskRaw, offset: 1 << 20, count: 4096)
      let took = ContinuousClock.now - start
      #expect(failed.status == EIO, "\(behaviour)")
      #expect(took < .seconds(40), "\(behaviour): \(took)")
      #expect(isMounted(mounted.mountpoint))
      #expect(
        Self.directRead(mounted.diskRaw, offset: 4096, count: 4096).bytes == Array(content[4096..<8192]))
    }
    current.set(.honest)
    #expect(
      Self.directRead(mounted.diskRaw, offset: 1 << 20, count: 4096).bytes == Array(content[(1 << 20)...]))
  }

  /// A presigned-style URL (a query string whose values hold '/') as the top of a chain: the
  /// backing name resolves next to the URL's path, without the query.
  @Test func aChainWhoseTopIsAddressedWithAQueryStringMountsOverHTTP() throws {
    let scratch = try Scratch("http-query")
    defer { scratch.remove() }
    let server = try NginxServer()
    defer { server.stop() }
    try FileManager.default.createDirectory(atPath: server.root + "/vm", withIntermediateDirectories: true)
    let base = server.root + "/vm/base.qcow2"
    try Qemu.create(base, size: "16M")
    try Qemu.io(base, ["write -P 0x11 0 8M"])
    let top = server.root + "/vm/top.qcow2"
    try Qemu.create(top, size: "16M", backing: "base.qcow2", backingFormat: "qcow2")
    try Qemu.io(top, ["write -P 0x22 4M 1M"])
    let oracle = try Qemu.rawFile(of: top, scratch: scratch)
    let query =
      "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID/20260101/us-east-1/s3/aws4_request"
      + "&X-Amz-Expires=3600&X-Amz-Signature=0123abcd"
    let mounted = try MountedImage.mount(server.url("vm/top.qcow2") + query, in: scratch)
    defer { mounted.unmount() }
    #expect(try compareFiles(mounted.diskRaw, oracle) == nil)
    // The signature stays out of /proc/mounts (world-readable).
    let mounts = try String(contentsOfFile: "/proc/mounts", encoding: .utf8)
    let line = mounts.split(separator: "\n").first { $0.contains(" \(mounted.mountpoint) ") } ?? ""
    #expect(line.hasPrefix(server.url("vm/top.qcow2") + " "), "\(line)")
    let chain = try run(
      vdiskfsBinary, ["info", "--backing-chain", "--output", "json", server.url("vm/top.qcow2") + query])
    #expect(chain.stdout.contains("\"filename\": \"\(server.url("vm/base.qcow2"))\""), "\(chain.stdout)")
  }

  /// With no credentials at all, a public-read object mounts with unsigned requests (one info
  /// line says so); a private one fails with what to do (exit 1); half a pair of keys is refused
  /// before any request (exit 1).
  @Test func aPublicObjectMountsAnonymouslyAndAPrivateOneSaysHowToGiveCredentials() throws {
    let cluster = try CephCluster.shared()
    let scratch = try Scratch("s3-anonymous")
    defer { scratch.remove() }
    let bucket = "anon-\(UUID().uuidString.prefix(8).lowercased())"
    try cluster.createBucket(bucket)
    let image = scratch.file("public.qcow2")
    try Qemu.create(image, size: "8M")
    try Qemu.io(image, ["write -P 0x61 1M 2M"])
    try cluster.s3([
      "-H", "x-amz-acl: public-read", "-T", image, cluster.url(bucket: bucket, key: "public.qcow2"),
    ])
    try cluster.putObject(bucket: bucket, key: "private.qcow2", file: image)
    let home = try scratch.directory("home")
    let anonymous = ["HOME=\(home)", "AWS_ENDPOINT_URL=\(cluster.endpoint)"]
    func attempt(_ key: String, _ mnt: String, _ extra: [String] = []) throws -> CommandResult {
      try run(
        "env",
        ["-i", "PATH=/usr/bin:/bin"] + anonymous + extra + [
          "timeout", "60", vdiskfsBinary, "s3://\(bucket)/\(key)", mnt, "-o", "ro",
        ], check: false)
    }
    let mnt = try scratch.directory("mnt-public")
    let mounted = try attempt("public.qcow2", mnt)
    let served = MountedImage(mountpoint: mnt)
    defer { served.unmount() }
    #expect(mounted.status == 0, "\(mounted.stderr)")
    let lines = mounted.stderr.split(separator: "\n").filter {
      $0.contains("unsigned (anonymous) S3 requests")
    }
    #expect(lines.count == 1, "\(mounted.stderr)")
    #expect(try compareFiles(served.diskRaw, try Qemu.rawFile(of: image, scratch: scratch)) == nil)
    let refusedMnt = try scratch.directory("mnt-private")
    let refused = try attempt("private.qcow2", refusedMnt)
    #expect(refused.status == 1, "\(refused.stderr)")
    #expect(refused.stderr.contains("the object is not public"), "\(refused.stderr)")
    #expect(refused.stderr.contains("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"), "\(refused.stderr)")
    let half = try attempt("public.qcow2", refusedMnt, ["AWS_ACCESS_KEY_ID=\(cluster.accessKey)"])
    #expect(half.status == 1, "\(half.stderr)")
    #expect(
      half.stderr.contains("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"), "\(half.stderr)")
    #expect(!isMounted(refusedMnt))
  }
}
