import Foundation
import ImageFormats
import QCOW2
import TestSupport
import Testing
import VDiskCore

/// One kind of image for the randomized differential test.
struct WriteScenario: Sendable, CustomTestStringConvertible {
  enum Backing: Sendable { case none, qcow2, raw }
  var name: String
  var options: [String] = []
  var size: UInt64 = 16 << 20
  var backing: Backing = .none
  var compressed = false
  var snapshot = false
  var startFull = false
  var seeds: [UInt64] = [1, 2]
  var ops = 1000
  var maxWrite = 4 << 20

  var testDescription: String { name }

  var clusterSize: UInt64 {
    for option in options where option.hasPrefix("cluster_size=") {
      let value = option.dropFirst("cluster_size=".count)
      if value.hasSuffix("k") { return (UInt64(value.dropLast()) ?? 64) << 10 }
      if value.hasSuffix("M") { return (UInt64(value.dropLast()) ?? 2) << 20 }
      return UInt64(value) ?? 65536
    }
    return 65536
  }
}

/// Random writes, reads, discards and flushes on a chain and on a mirror, compared as they go;
/// then `qemu-img check` must find the image clean and `qemu-img compare` identical to the
/// mirror. Snapshots and backing files must not change.
@Suite struct WriteDifferentialTests {
  static let scenarios: [WriteScenario] = [
    WriteScenario(
      name: "512 B clusters", options: ["cluster_size=512"], size: 4 << 20, ops: 1200, maxWrite: 1 << 20),
    WriteScenario(name: "64 KiB clusters", size: 24 << 20),
    WriteScenario(name: "2 MiB clusters", options: ["cluster_size=2M"], size: 48 << 20, seeds: [3], ops: 500),
    WriteScenario(
      name: "extended L2 over qcow2 backing", options: ["extended_l2=on"], backing: .qcow2),
    WriteScenario(
      name: "extended L2, 16 KiB clusters, compressed", options: ["extended_l2=on", "cluster_size=16k"],
      size: 8 << 20, compressed: true),
    WriteScenario(name: "qcow2 backing", backing: .qcow2),
    WriteScenario(name: "raw backing", options: ["cluster_size=4k"], size: 8 << 20, backing: .raw),
    WriteScenario(name: "compressed clusters", compressed: true),
    WriteScenario(name: "internal snapshot", snapshot: true),
    WriteScenario(
      name: "snapshot, compressed, extended L2 over backing",
      options: ["extended_l2=on", "cluster_size=32k"],
      size: 8 << 20, backing: .qcow2, compressed: true, snapshot: true, seeds: [5]),
    WriteScenario(name: "refcount_bits=1", options: ["refcount_bits=1", "cluster_size=4k"], size: 8 << 20),
    WriteScenario(name: "refcount_bits=64", options: ["refcount_bits=64", "cluster_size=1k"], size: 4 << 20),
    WriteScenario(
      name: "refcount_bits=16, snapshot", options: ["refcount_bits=16"], snapshot: true, seeds: [7]),
    WriteScenario(name: "compat 0.10", options: ["compat=0.10"]),
    WriteScenario(
      name: "compat 0.10 over backing", options: ["compat=0.10", "cluster_size=8k"], size: 8 << 20,
      backing: .qcow2),
    WriteScenario(name: "starts full", size: 8 << 20, startFull: true),
    WriteScenario(
      name: "starts full, 512 B clusters", options: ["cluster_size=512"], size: 2 << 20, startFull: true,
      seeds: [9]),
  ]

  @Test(arguments: scenarios)
  func randomized(_ scenario: WriteScenario) throws {
    for seed in scenario.seeds {
      try Self.run(scenario, seed: seed)
    }
  }

  static func run(_ s: WriteScenario, seed: UInt64) throws {
    let scratch = try Scratch("qwrite")
    defer { scratch.remove() }
    let image = scratch.file("top.qcow2")
    let base = scratch.file(s.backing == .raw ? "base.raw" : "base.qcow2")
    let cluster = s.clusterSize
    var options = s.options
    if s.backing != .none {
      let baseFormat = s.backing == .raw ? "raw" : "qcow2"
      try Qemu.create(base, format: baseFormat, size: "\(s.size)")
      try Qemu.scatterPatterns(
        base, format: baseFormat, size: s.size, count: 30, seed: seed &+ 100, maxUnits: 512)
      try Qemu.create(
        image, size: "\(s.size)", options: options, backing: base.split(separator: "/").last.map(String.init),
        backingFormat: baseFormat)
    } else {
      options.removeAll { $0.isEmpty }
      try Qemu.create(image, size: "\(s.size)", options: options)
    }
    if s.startFull { try Qemu.io(image, ["write -P 0x3c 0 \(s.size)"]) }
    if s.compressed {
      // Compressed writes need unallocated clusters: before anything else.
      let commands = (0..<8).map { i in "write -c -P \(0x40 + i) \(UInt64(i) * 5 * cluster) \(2 * cluster)" }
      try Qemu.io(image, commands)
    }
    try Qemu.scatterPatterns(image, size: s.size, count: 20, seed: seed, maxUnits: 256)
    var snapshotRaw: [UInt8]?
    if s.snapshot {
      try Qemu.img("snapshot", "-c", "s1", image)
      try Qemu.scatterPatterns(image, size: s.size, count: 10, seed: seed &+ 7, maxUnits: 64)
      snapshotRaw = try snapshotContent(image, scratch: scratch)
    }
    let baseSum = s.backing == .none ? 0 : try fileChecksum(base)
    let initial = try Qemu.rawContent(of: image, scratch: scratch)
    #expect(UInt64(initial.count) == s.size)

    try exercise(s, image: image, initial: initial, seed: seed, scratch: scratch)

    try Qemu.expectCleanAndIdentical(
      image, format: "qcow2", to: scratch.file("mirror.raw"), "\(s.name) seed \(seed)")
    if let snapshotRaw {
      let after = try snapshotContent(image, scratch: scratch)
      #expect(firstDifference(after, snapshotRaw) == nil, "\(s.name): snapshot s1 changed")
    }
    if s.backing != .none { #expect(try fileChecksum(base) == baseSum, "\(s.name): backing file changed") }
  }

  static func snapshotContent(_ image: String, scratch: Scratch) throws -> [UInt8] {
    let out = scratch.file("s1.raw")
    defer { try? FileManager.default.removeItem(atPath: out) }
    try Qemu.img("convert", "-l", "snapshot.name=s1", "-O", "raw", image, out)
    return try [UInt8](Data(contentsOf: URL(fileURLWithPath: out)))
  }

  /// The random operations; the chain is closed when this returns.
  static func exercise(_ s: WriteScenario, image: String, initial: [UInt8], seed: UInt64, scratch: Scratch)
    throws
  {
    let disk = MirroredDisk(chain: try openWritable(image), mirror: initial)
    var run = DifferentialRun(name: s.name, seed: seed, ops: s.ops, unit: s.clusterSize)
    run.maxWrite = UInt64(s.maxWrite)
    try run.exercise(disk, mirrorPath: scratch.file("mirror.raw"))
  }
}
