import Foundation
import TestSupport
import Testing

/// Images in Ceph RBD (the test cluster), mounted by the real binary (daemonized: the RBD client
/// reconnects after the fork): every format read, snapshots, writes checked with `rbd export` and
/// QEMU, and RBD's exclusive lock between two writers.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct RBDMountTests {
  /// A pool of its own for each test: backing and extent names resolve by their last component
  /// in the image's pool, and fixtures share names.
  static func makePool(_ cluster: CephCluster) throws -> String {
    let pool = "t\(UUID().uuidString.prefix(8).lowercased())"
    _ = try run("ceph", ["--conf", cluster.confPath, "osd", "pool", "create", pool, "8", "8"])
    _ = try run("ceph", ["--conf", cluster.confPath, "osd", "pool", "application", "enable", pool, "rbd"])
    return pool
  }

  static func removePool(_ cluster: CephCluster, _ pool: String) {
    _ = try? run(
      "ceph",
      ["--conf", cluster.confPath, "osd", "pool", "rm", pool, pool, "--yes-i-really-really-mean-it"],
      check: false)
  }

  @Test func everyFormatMountsFromRBD() throws {
    let cluster = try CephCluster.shared()
    let pool = try Self.makePool(cluster)
    defer { Self.removePool(cluster, pool) }
    for fixture in MountMatrixTests.formatFixtures + MountMatrixTests.fixtures.prefix(3) {
      let scratch = try Scratch("rbd-matrix")
      defer { scratch.remove() }
      let image = try fixture.make(scratch)
      let names = try FileManager.default.contentsOfDirectory(atPath: scratch.path)
      for name in names where !name.hasPrefix("mnt-") {
        try cluster.rbdImport(file: scratch.file(name), pool: pool, image: name)
      }
      defer { for name in names { try? cluster.rbdRemove(pool: pool, image: name) } }
      let oracle = try Qemu.rawFile(of: image, format: fixture.format, scratch: scratch)
      let name = (image as NSString).lastPathComponent
      let mounted = try MountedImage.mount(
        "rbd:\(pool)/\(name)", in: scratch, environment: ["CEPH_CONF": cluster.confPath])
      defer { mounted.unmount() }
      #expect(try compareFiles(mounted.diskRaw, oracle) == nil, "\(fixture.name)")
    }
  }

  @Test func aSnapshotShowsTheImageAsItWasAndIsReadOnly() throws {
    let cluster = try CephCluster.shared()
    let scratch = try Scratch("rbd-snap")
    defer { scratch.remove() }
    let image = "snap-\(UUID().uuidString.prefix(8).lowercased())"
    let before = scratch.file("before.raw")
    try Data([UInt8](repeating: 0x5a, count: 8 << 20)).write(to: URL(fileURLWithPath: before))
    try cluster.rbdImport(file: before, image: image)
    defer { try? cluster.rbd(["snap", "purge", "--no-progress", "rbd/\(image)"]) }
    defer { try? cluster.rbdRemove(image: image) }
    try cluster.rbdSnapshot(image: image, snapshot: "s1")
    let env = ["CEPH_CONF": cluster.confPath]
    do {  // change the head through vdiskfs
      let head = try MountedImage.mount(
        "rbd:rbd/\(image)", in: scratch, ["-o", "format=raw"], writable: true, environment: env)
      defer { head.unmount() }
      try run("dd", ["if=/dev/zero", "of=\(head.diskRaw)", "bs=1M", "count=2", "conv=notrunc,fsync"])
    }
    let snap = try MountedImage.mount("rbd:rbd/\(image)@s1", in: scratch, environment: env)
    defer { snap.unmount() }
    #expect(try compareFiles(snap.diskRaw, before) == nil)
    #expect(try statFile(snap.diskRaw).st_mode & 0o222 == 0)
  }

  @Test func writesToRawContentReachTheRBDImage() throws {
    let cluster = try CephCluster.shared()
    let scratch = try Scratch("rbd-raw-write")
    defer { scratch.remove() }
    let image = "raw-\(UUID().uuidString.prefix(8).lowercased())"
    var expected = [UInt8](repeating: 0x11, count: 16 << 20)
    let file = scratch.file("disk.raw")
    try Data(expected).write(to: URL(fileURLWithPath: file))
    try cluster.rbdImport(file: file, image: image)
    defer { try? cluster.rbdRemove(image: image) }
    do {
      let mounted = try MountedImage.mount(
        "rbd:rbd/\(image)", in: scratch, ["-o", "format=raw"], writable: true,
        environment: ["CEPH_CONF": cluster.confPath])
      defer { mounted.unmount() }
      let data = scratch.file("data")
      try Data([UInt8](repeating: 0x77, count: 3 << 20)).write(to: URL(fileURLWithPath: data))
      try run("dd", ["if=\(data)", "of=\(mounted.diskRaw)", "bs=1M", "seek=5", "conv=notrunc,fsync"])
      expected.replaceSubrange((5 << 20)..<(8 << 20), with: [UInt8](repeating: 0x77, count: 3 << 20))
      #expect(try statFile(mounted.diskRaw).st_size == 16 << 20)
    }
    let exported = scratch.file("exported.raw")
    try cluster.rbdExport(image: image, to: exported)
    #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: exported))) == expected)
  }

  @Test func aQcow2InRBDGrowsTheImageAsItAllocatesAndQEMUFindsItClean() throws {
    let cluster = try CephCluster.shared()
    let scratch = try Scratch("rbd-qcow2-write")
    defer { scratch.remove() }
    let image = "q-\(UUID().uuidString.prefix(8).lowercased())"
    let qcow2 = scratch.file("disk.qcow2")
    try Qemu.create(qcow2, size: "64M")
    try Qemu.io(qcow2, ["write -P 0x21 0 1M"])
    try cluster.rbdImport(file: qcow2, image: image)
    defer { try? cluster.rbdRemove(image: image) }
    let sizeBefore = try statFile(qcow2).st_size
    do {
      let mounted = try MountedImage.mount(
        "rbd:rbd/\(image)", in: scratch, writable: true, environment: ["CEPH_CONF": cluster.confPath])
      defer { mounted.unmount() }
      let data = scratch.file("data")
      try Data([UInt8](repeating: 0x42, count: 8 << 20)).write(to: URL(fileURLWithPath: data))
      try run("dd", ["if=\(data)", "of=\(mounted.diskRaw)", "bs=1M", "seek=20", "conv=notrunc,fsync"])
    }
    try Qemu.io(qcow2, ["write -P 0x42 20M 8M"])  // the expected content
    let exported = scratch.file("exported.qcow2")
    try cluster.rbdExport(image: image, to: exported)
    let sizeAfter = try statFile(exported).st_size
    #expect(sizeAfter >= sizeBefore + (8 << 20), "RBD image \(sizeBefore) -> \(sizeAfter) bytes")
    _ = try Qemu.img("check", exported)
    _ = try Qemu.img("compare", exported, qcow2)
  }

  @Test func aSecondWriterIsRefusedWhileTheFirstHoldsTheLock() throws {
    let cluster = try CephCluster.shared()
    let scratch = try Scratch("rbd-lock")
    defer { scratch.remove() }
    let image = "lock-\(UUID().uuidString.prefix(8).lowercased())"
    let file = scratch.file("disk.raw")
    try Data([UInt8](repeating: 1, count: 4 << 20)).write(to: URL(fileURLWithPath: file))
    try cluster.rbdImport(file: file, image: image)
    defer { try? cluster.rbdRemove(image: image) }
    let env = ["CEPH_CONF": cluster.confPath]
    let first = try MountedImage.mount(
      "rbd:rbd/\(image)", in: scratch, ["-o", "format=raw"], writable: true, environment: env)
    defer { first.unmount() }
    // The daemon holds the lock once it serves: write through it first.
    try run("dd", ["if=/dev/zero", "of=\(first.diskRaw)", "bs=4k", "count=1", "conv=notrunc,fsync"])
    let mnt = try scratch.directory("second")
    let second = try run(
      "env",
      [
        "CEPH_CONF=\(cluster.confPath)", "timeout", "60", vdiskfsBinary, "rbd:rbd/\(image)", mnt, "-o",
        "format=raw",
      ],
      check: false)
    #expect(second.status == 8, "\(second.stderr)")
    #expect(second.stderr.contains("exclusive lock"), "\(second.stderr)")
    #expect(!isMounted(mnt))
  }

  /// `rbd:POOL/NAMESPACE/IMAGE`: a chain in a namespace resolves its backing file there, not
  /// in the pool's default namespace (which holds a different image of the same name); a
  /// missing namespace is not found (exit 3).
  @Test func aChainInANamespaceMountsAndAMissingNamespaceIsNotFound() throws {
    let cluster = try CephCluster.shared()
    let pool = try Self.makePool(cluster)
    defer { Self.removePool(cluster, pool) }
    let scratch = try Scratch("rbd-namespace")
    defer { scratch.remove() }
    try cluster.rbdNamespaceCreate(pool: pool, namespace: "vms")
    let base = scratch.file("base.qcow2")
    try Qemu.create(base, size: "16M")
    try Qemu.io(base, ["write -P 0x31 0 8M"])
    let top = scratch.file("top.qcow2")
    try Qemu.create(top, size: "16M", backing: "base.qcow2", backingFormat: "qcow2")
    try Qemu.io(top, ["write -P 0x32 2M 1M"])
    let decoy = scratch.file("decoy.qcow2")
    try Qemu.create(decoy, size: "16M")
    try Qemu.io(decoy, ["write -P 0x99 0 16M"])
    try cluster.rbdImport(file: top, pool: "\(pool)/vms", image: "top.qcow2")
    try cluster.rbdImport(file: base, pool: "\(pool)/vms", image: "base.qcow2")
    try cluster.rbdImport(file: decoy, pool: pool, image: "base.qcow2")
    defer {
      try? cluster.rbdRemove(pool: "\(pool)/vms", image: "top.qcow2")
      try? cluster.rbdRemove(pool: "\(pool)/vms", image: "base.qcow2")
      try? cluster.rbdRemove(pool: pool, image: "base.qcow2")
    }
    let oracle = try Qemu.rawFile(of: top, scratch: scratch)
    let environment = ["CEPH_CONF": cluster.confPath]
    let mounted = try MountedImage.mount("rbd:\(pool)/vms/top.qcow2", in: scratch, environment: environment)
    defer { mounted.unmount() }
    #expect(try compareFiles(mounted.diskRaw, oracle) == nil)
    let mnt = try scratch.directory("missing")
    let missing = try run(
      "env",
      [
        "CEPH_CONF=\(cluster.confPath)", "timeout", "60", vdiskfsBinary, "rbd:\(pool)/nosuchns/top.qcow2",
        mnt, "-o", "ro",
      ],
      check: false)
    #expect(missing.status == 3, "\(missing.stderr)")
    #expect(missing.stderr.contains("namespace nosuchns does not exist in pool \(pool)"), "\(missing.stderr)")
    #expect(!isMounted(mnt))
  }
}
