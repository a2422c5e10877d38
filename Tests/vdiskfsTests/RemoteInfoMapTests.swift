import Foundation
import TestSupport
import Testing

/// `vdiskfs info` and `vdiskfs map` take a mount's options about opening the image (`-o`), the
/// remote-store ones included, and refuse the options only a mount has.
@Suite struct RemoteInfoMapTests {
  static func vdiskfs(_ arguments: [String], environment: [String: String] = [:]) throws -> CommandResult {
    try run(
      "env", environment.map { "\($0.key)=\($0.value)" } + ["timeout", "60", vdiskfsBinary] + arguments,
      check: false)
  }

  @Test func mountOnlyOptionsAreRefusedByInfoAndMap() throws {
    let scratch = try Scratch("info-options")
    defer { scratch.remove() }
    let image = scratch.file("a.qcow2")
    try Qemu.create(image, size: "4M")
    for command in ["info", "map"] {
      for option in ["allow_other", "ro", "threads=4", "read_ahead_kb=64", "nosplice", "nodev", "nofail"] {
        let r = try Self.vdiskfs([command, "-o", "format=qcow2,\(option)", image])
        #expect(r.status == 2, "\(command) -o \(option): \(r.stderr)")
        let key = option.split(separator: "=")[0]
        #expect(r.stderr.contains("'\(key)' is a mount option"), "\(r.stderr)")
      }
      let unknown = try Self.vdiskfs([command, "-o", "no_such_option", image])
      #expect(
        unknown.status == 2 && unknown.stderr.contains("unknown option 'no_such_option'"), "\(unknown.stderr)"
      )
      let badValue = try Self.vdiskfs([command, "-o", "remote_timeout=0", image])
      #expect(badValue.status == 2 && badValue.stderr.contains("remote_timeout"), "\(badValue.stderr)")
      let good = try Self.vdiskfs(
        [
          command, "-o", "format=qcow2,cache_size=1M,remote_timeout=5,sslverify=on", "-o", "connections=2",
          image,
        ])
      #expect(good.status == 0, "\(command): \(good.stderr)")
    }
    let wrongFormat = try Self.vdiskfs(["info", "-o", "format=vdi", image])
    #expect(wrongFormat.status == 4, "\(wrongFormat.stderr)")
    // --format, stated outright, wins over -o format.
    let stated = try Self.vdiskfs(["info", "--format", "qcow2", "-o", "format=vdi", image])
    #expect(stated.status == 0, "\(stated.stderr)")
  }

  /// `-o s3_endpoint` and `remote_timeout` reach the S3 store from `info` and `map` as from a
  /// mount: they win over AWS_ENDPOINT_URL (a closed port fails at once), and with the right
  /// endpoint the object's map is the local file's.
  @Test func infoAndMapTakeTheRemoteOptions() throws {
    let cluster = try CephCluster.shared()
    let scratch = try Scratch("info-s3")
    defer { scratch.remove() }
    let image = scratch.file("disk.qcow2")
    try Qemu.create(image, size: "16M")
    try Qemu.io(image, ["write -P 0x21 1M 3M", "write -z 8M 1M"])
    let location = try cluster.putInNewBucket(image, key: "disk.qcow2", prefix: "info")
    var environment = cluster.environment
    environment["AWS_ENDPOINT_URL"] = "http://127.0.0.1:\(try NginxServer.freePort())"
    let options = "s3_endpoint=\(cluster.endpoint),s3_region=us-east-1,remote_timeout=2"
    let info = try Self.vdiskfs(
      ["info", "--output", "json", "-o", options, location], environment: environment)
    #expect(info.status == 0, "\(info.stderr)")
    #expect(info.stdout.contains("\"virtual-size\": 16777216"), "\(info.stdout)")
    let local = try Self.vdiskfs(["map", "--output", "json", image])
    let remote = try Self.vdiskfs(
      ["map", "--output", "json", "-o", options, location], environment: environment)
    #expect(remote.status == 0, "\(remote.stderr)")
    #expect(remote.stdout == local.stdout)
    let start = Date()
    let down = try Self.vdiskfs(["map", "-o", "remote_timeout=1", location], environment: environment)
    #expect(down.status == 1 && down.stderr.contains("cannot reach 127.0.0.1:"), "\(down.stderr)")
    #expect(Date().timeIntervalSince(start) < 20)
  }

  /// A local image whose backing file is in S3: `info --backing-chain` and `map` refuse the
  /// remote base as a mount does, and follow it with `-o remote_backing` (map equal to
  /// qemu-img's of the same chain with a local base).
  @Test func aLocalImageOverAnS3BaseNeedsRemoteBacking() throws {
    let cluster = try CephCluster.shared()
    let scratch = try Scratch("info-s3-base")
    defer { scratch.remove() }
    let base = scratch.file("base.qcow2")
    try Qemu.create(base, size: "16M")
    try Qemu.io(base, ["write -P 0x44 0 6M"])
    let remoteBase = try cluster.putInNewBucket(base, key: "base.qcow2", prefix: "base")
    // The same overlay twice: over the local base (QEMU's oracle), and pointed at the S3 one.
    let twin = scratch.file("twin.qcow2")
    try Qemu.create(twin, size: "16M", backing: base, backingFormat: "qcow2")
    try Qemu.io(twin, ["write -P 0x55 2M 1M"])
    let overlay = scratch.file("overlay.qcow2")
    try FileManager.default.copyItem(atPath: twin, toPath: overlay)
    _ = try Qemu.img("rebase", "-u", "-b", remoteBase, "-F", "qcow2", overlay)
    let env = cluster.environment
    for arguments in [["info", "--backing-chain", overlay], ["map", overlay]] {
      let refused = try Self.vdiskfs(arguments, environment: env)
      #expect(refused.status == 1, "\(arguments): \(refused.stderr)")
      #expect(
        refused.stderr.contains(
          "is in a remote store; a local image may name one only with -o remote_backing"),
        "\(refused.stderr)")
    }
    let chain = try Self.vdiskfs(
      ["info", "--backing-chain", "--output", "json", "-o", "remote_backing", overlay], environment: env)
    #expect(chain.status == 0, "\(chain.stderr)")
    #expect(chain.stdout.contains("\"filename\": \"\(remoteBase)\""), "\(chain.stdout)")
    let ours = try Self.vdiskfs(
      ["map", "--output", "json", "-o", "remote_backing", overlay], environment: env)
    #expect(ours.status == 0, "\(ours.stderr)")
    let theirs = try Qemu.img("map", "--output=json", twin)
    #expect(try MapAndInfoTests.objects(ours.stdout) == MapAndInfoTests.objects(theirs))
    // backing_dir still keeps a local image's chain local.
    let confined = try Self.vdiskfs(
      ["map", "-o", "remote_backing,backing_dir=\(scratch.path)", overlay], environment: env)
    #expect(confined.status == 1, "\(confined.stderr)")
  }
}
