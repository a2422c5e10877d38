import Foundation
import QED
import TestSupport
import Testing
import VDiskCore

/// One kind of QED for the randomized differential test.
struct QEDWriteScenario: Sendable, CustomTestStringConvertible {
  var name: String
  var clusterSize = 65536
  var tableSize = 4
  /// A raw backing file full of patterns.
  var backing = false
  var prefilled = false
  var size: UInt64 = 24 << 20
  var cacheSize: Int?
  var seeds: [UInt64] = [1, 2]
  var ops = 300

  var testDescription: String { name }
}

/// Writes through the engine: random writes, reads, discards and flushes on a QED and on a mirror,
/// then `qemu-img check` clean and `qemu-img compare` identical; the need-check flag as the spec
/// says; what a crash leaves.
@Suite struct QEDWriteTests {
  static let scenarios: [QEDWriteScenario] = [
    QEDWriteScenario(name: "empty"),
    QEDWriteScenario(name: "prefilled", prefilled: true),
    QEDWriteScenario(name: "raw backing file", backing: true, prefilled: true),
    // Many small L2 tables (each maps 4 MiB). Files of 4 KiB clusters stay under 4095 clusters
    // (16 MiB): past that, QEMU 7.2's QED check reports one leaked cluster even for an image
    // only qemu-io wrote (checked by hand; every cluster is referenced once).
    QEDWriteScenario(
      name: "4K clusters, 2-cluster tables", clusterSize: 4096, tableSize: 2, prefilled: true, size: 12 << 20,
      seeds: [3]),
    QEDWriteScenario(name: "1M clusters", clusterSize: 1 << 20, tableSize: 2, backing: true, seeds: [4]),
    // A budget smaller than one dirty page: every allocating commit writes back.
    QEDWriteScenario(
      name: "tiny cache", clusterSize: 4096, tableSize: 2, backing: true, size: 12 << 20, cacheSize: 64,
      seeds: [5]),
  ]

  @Test(arguments: scenarios)
  func randomized(_ scenario: QEDWriteScenario) throws {
    for seed in scenario.seeds { try Self.run(scenario, seed: seed) }
  }

  static func run(_ s: QEDWriteScenario, seed: UInt64) throws {
    let scratch = try Scratch("qed-write")
    defer { scratch.remove() }
    let image = scratch.file("disk.qed")
    let options = ["cluster_size=\(s.clusterSize)", "table_size=\(s.tableSize)"]
    if s.backing {
      let base = scratch.file("base.raw")
      try Qemu.create(base, format: "raw", size: "\(s.size)")
      try Qemu.scatterPatterns(base, format: "raw", size: s.size, count: 30, seed: seed + 100, maxUnits: 8192)
      try Qemu.create(
        image, format: "qed", size: "\(s.size)", options: options, backing: "base.raw", backingFormat: "raw")
    } else {
      try Qemu.create(image, format: "qed", size: "\(s.size)", options: options)
    }
    if s.prefilled {
      try Qemu.scatterPatterns(image, format: "qed", size: s.size, count: 12, seed: seed, maxUnits: 4096)
      try Qemu.io(image, format: "qed", ["write -z 0 \(s.clusterSize)"])
    }
    try Qemu.expectCheck(image, format: "qed", "\(s.name) seed \(seed), before vdiskfs writes")
    let initial = try Qemu.rawContent(of: image, scratch: scratch)
    #expect(UInt64(initial.count) == s.size)
    let disk = MirroredDisk(
      chain: try openWritable(image, cacheSize: s.cacheSize, format: QEDDriver.self), mirror: initial)
    var run = DifferentialRun(name: s.name, seed: seed, ops: s.ops, unit: UInt64(s.clusterSize))
    run.lengthCutoffs = (50, 85, 96)
    run.mix = .evenDiscards
    try run.exercise(disk, mirrorPath: scratch.file("mirror.raw"))
    #expect(try qedFeatures(image) & needCheckBit == 0, "\(s.name): need-check left set after the last flush")
    try Qemu.expectCleanAndIdentical(
      image, format: "qed", to: scratch.file("mirror.raw"), "\(s.name) seed \(seed)")
    // New clusters and tables were appended whole: the file stays a multiple of the cluster size.
    let size = try FileManager.default.attributesOfItem(atPath: image)[.size] as? UInt64 ?? 1
    #expect(size % UInt64(s.clusterSize) == 0)
  }

  /// QED_F_NEED_CHECK is set on disk before an allocating write's metadata can land, cleared by
  /// the flush that makes everything durable, and not set by writes into allocated clusters.
  @Test func needCheckFlagFollowsAllocations() throws {
    let scratch = try Scratch("qed-needcheck")
    defer { scratch.remove() }
    let image = scratch.file("n.qed")
    try Qemu.create(image, format: "qed", size: "8M")
    let chain = try openWritable(image, format: QEDDriver.self)
    #expect(try qedFeatures(image) & needCheckBit == 0)
    let bytes = [UInt8](repeating: 0x77, count: 5000)
    _ = try bytes.withUnsafeBytes { try chain.write($0, at: 100_000) }
    #expect(try qedFeatures(image) & needCheckBit != 0)
    try chain.flush()
    #expect(try qedFeatures(image) & needCheckBit == 0)
    // In place: no allocation, no flag.
    _ = try bytes.withUnsafeBytes { try chain.write($0, at: 70_000) }
    #expect(try qedFeatures(image) & needCheckBit == 0)
    try chain.flush()
    #expect(try Qemu.check(image, format: "qed").isClean)
    let expected = try Qemu.rawContent(of: image, format: "qed", scratch: scratch)
    #expect(Array(expected[100_000..<105_000]) == bytes)
    #expect(Array(expected[70_000..<75_000]) == bytes)
  }

  /// Allocating writes never flushed (a crash): the image keeps the need-check flag and
  /// `qemu-img check` finds no corruption (leaks at worst); a read-write open checks it and
  /// clears the flag, and the data flushed before is all there.
  @Test func unflushedAllocationsLeaveAtWorstLeaks() throws {
    let scratch = try Scratch("qed-crash")
    defer { scratch.remove() }
    let image = scratch.file("c.qed")
    try Qemu.create(image, format: "qed", size: "16M", options: ["cluster_size=4096", "table_size=2"])
    do {
      let chain = try openWritable(image, format: QEDDriver.self)
      let durable = [UInt8](repeating: 0x31, count: 10_000)
      _ = try durable.withUnsafeBytes { try chain.write($0, at: 1 << 20) }
      try chain.flush()
      let lost = [UInt8](repeating: 0x32, count: 300_000)
      _ = try lost.withUnsafeBytes { try chain.write($0, at: 9 << 20) }
      // The chain goes away without a flush: its dirty tables never reach the file.
    }
    #expect(try qedFeatures(image) & needCheckBit != 0)
    let report = try Qemu.check(image, format: "qed")
    #expect(report.isUncorrupted, "\(report)")
    let chain = try openWritable(image, format: QEDDriver.self)
    #expect(try qedFeatures(image) & needCheckBit == 0)
    #expect(try chain.read(at: 1 << 20, count: 10_000).allSatisfy { $0 == 0x31 })
    // Each cluster of the unflushed write is either linked whole or not at all.
    let after = try chain.read(at: 9 << 20, count: 300_000)
    for start in stride(from: 0, to: after.count, by: 4096) {
      let cluster = after[start..<min(after.count, start + 4096)]
      #expect(cluster.allSatisfy { $0 == 0 } || cluster.allSatisfy { $0 == 0x32 })
    }
  }

  /// `truncate` grows the disk as `qemu-img resize` grows a QED (a new image_size; L1 entries the
  /// disk now uses and a hostile image left non-zero are cleared first); shrinking and sizes
  /// that are not whole sectors or exceed what the tables map are refused.
  @Test func growsAsQemuDoes() throws {
    let scratch = try Scratch("qed-grow")
    defer { scratch.remove() }
    let image = scratch.file("g.qed")
    // 4 KiB clusters, two-cluster tables: an L2 table maps 4 MiB, 1024 of them 4 GiB.
    try Qemu.create(image, format: "qed", size: "6M", options: ["cluster_size=4096", "table_size=2"])
    try Qemu.io(image, format: "qed", ["write -P 0x21 0 6M"])
    // L1 entry 3 (12–16 MiB) is past the disk: make it name garbage.
    try patchLE(image, at: 4096 + 3 * 8, 0x7777_7000, width: 8)
    let chain = try openWritable(image, format: QEDDriver.self)
    expectVDiskError(.unsupported, [image, "shrinking QED images is not supported"]) {
      try chain.resize(to: 4 << 20, allowShrink: true)
    }
    expectVDiskError(.invalidArgument, [image, "image size 16777217"]) {
      try chain.resize(to: (16 << 20) + 1, allowShrink: false)
    }
    expectVDiskError(.invalidArgument, [image, "image size 8589934592", "exceeds what the tables map"]) {
      try chain.resize(to: 8 << 30, allowShrink: false)
    }
    try chain.resize(to: 16 << 20, allowShrink: false)
    #expect(chain.virtualSize == 16 << 20)
    #expect(try chain.read(at: 13 << 20, count: 4096).allSatisfy { $0 == 0 })
    let bytes = [UInt8](repeating: 0x5e, count: 70_000)
    _ = try bytes.withUnsafeBytes { try chain.write($0, at: (16 << 20) - 70_000) }
    try chain.flush()
    #expect(try qemuVirtualSize(image, format: "qed") == 16 << 20)
    #expect(try u64LE(image, at: 4096 + 3 * 8) != 0x7777_7000)
    #expect(try Qemu.check(image, format: "qed").isClean)
    var expected = [UInt8](repeating: 0x21, count: 6 << 20) + [UInt8](repeating: 0, count: 10 << 20)
    expected.replaceSubrange(((16 << 20) - 70_000)..<(16 << 20), with: bytes)
    #expect(try Qemu.rawContent(of: image, format: "qed", scratch: scratch) == expected)
    #expect(try readAll(chain) == expected)
  }
}
