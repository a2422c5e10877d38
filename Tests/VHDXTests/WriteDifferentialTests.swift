import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore

@testable import VHDX

/// One kind of VHDX image for the randomized differential test.
struct VHDXWriteScenario: Sendable, CustomTestStringConvertible {
  enum Kind: Sendable { case dynamic, fixed, differencing }
  var name: String
  var kind: Kind = .dynamic
  var options: [String] = []
  var size: UInt64 = 24 << 20
  /// Patterns qemu-io writes first (0: an empty image).
  var prefill = 20
  var startFull = false
  /// Differencing children: their logical sector size.
  var sectorSize: UInt64 = 512
  var seeds: [UInt64] = [1, 2]
  var ops = 300
  var maxWrite = 4 << 20
  /// A cache budget for the chain (nil: the default, which holds every table).
  var cacheSize: Int?

  var testDescription: String { name }
}

/// Random writes, reads, discards and flushes on a VHDX chain and on a mirror, compared as they
/// go; then `qemu-img check` must find the image clean and `qemu-img compare` identical to the
/// mirror. Differencing children (qemu cannot open them) are checked by a fresh vdiskfs open,
/// read-only and read-write (whose open re-checks every block), instead; their parent must not
/// change.
@Suite struct VHDXWriteDifferentialTests {
  static let scenarios: [VHDXWriteScenario] = [
    VHDXWriteScenario(name: "dynamic, default block size, empty", prefill: 0),
    VHDXWriteScenario(name: "dynamic, default block size, pre-filled", seeds: [3]),
    VHDXWriteScenario(
      name: "dynamic, 1 MiB blocks, empty", options: ["block_size=1M"], size: 16 << 20, prefill: 0),
    VHDXWriteScenario(name: "dynamic, 1 MiB blocks, pre-filled", options: ["block_size=1M"], size: 16 << 20),
    VHDXWriteScenario(
      name: "dynamic, 1 MiB blocks, tiny cache", options: ["block_size=1M"], size: 12 << 20, seeds: [4],
      ops: 300, cacheSize: 0),
    VHDXWriteScenario(
      name: "dynamic, starts full", options: ["block_size=1M"], size: 8 << 20, prefill: 0, startFull: true,
      seeds: [5]),
    VHDXWriteScenario(
      name: "fixed", kind: .fixed, options: ["subformat=fixed", "block_size=1M"], size: 16 << 20),
    VHDXWriteScenario(
      name: "fixed, all blocks present", kind: .fixed,
      options: ["subformat=fixed", "block_size=1M", "block_state_zero=off"], size: 16 << 20, seeds: [10]),
    VHDXWriteScenario(
      name: "differencing, 512 B sectors", kind: .differencing, size: 12 << 20, seeds: [6, 7]),
    VHDXWriteScenario(
      name: "differencing, 4 KiB sectors", kind: .differencing, size: 12 << 20, sectorSize: 4096, seeds: [8]),
    VHDXWriteScenario(
      name: "differencing, tiny cache", kind: .differencing, size: 8 << 20, seeds: [9], ops: 300, cacheSize: 0
    ),
  ]

  @Test(arguments: scenarios)
  func randomized(_ scenario: VHDXWriteScenario) throws {
    for seed in scenario.seeds {
      try Self.run(scenario, seed: seed)
    }
  }

  static func run(_ s: VHDXWriteScenario, seed: UInt64) throws {
    let scratch = try Scratch("vhdx-write")
    defer { scratch.remove() }
    let image = scratch.file(s.kind == .differencing ? "child.vhdx" : "disk.vhdx")
    let base = scratch.file("base.vhdx")
    var initial: [UInt8]
    var baseSum: UInt64 = 0
    if s.kind == .differencing {
      let (guid, parent) = try DifferencingTests.makeParent(base, size: "\(s.size)", scratch: scratch)
      var child = DifferencingTests.child(size: s.size, linkage: guid)
      child.logicalSectorSize = s.sectorSize
      let perBlock = Int((1 << 20) / s.sectorSize)
      // Every state a writer meets: full, partial, zero, unmapped, undefined, not present.
      child.blocks = [
        0: .full(0xA1), 1: .partial(0xA2, [0..<1, 8..<24, perBlock - 8..<perBlock]), 2: .state(2),
        3: .state(3), 5: .partial(0xA3, [1..<2, 3..<perBlock]), 6: .state(1),
      ]
      try child.write(to: image)
      initial = child.expected(over: parent)
      baseSum = try fileChecksum(base)
    } else {
      try Qemu.create(image, format: "vhdx", size: "\(s.size)", options: s.options)
      if s.startFull { try Qemu.io(image, format: "vhdx", ["write -P 0x3c 0 \(s.size)"]) }
      if s.prefill > 0 {
        try Qemu.scatterPatterns(
          image, format: "vhdx", size: s.size, count: s.prefill, seed: seed, maxUnits: 4096)
      }
      initial = try Qemu.rawContent(of: image, scratch: scratch)
    }
    #expect(UInt64(initial.count) == s.size)

    let fileSize = try FileManager.default.attributesOfItem(atPath: image)[.size] as? UInt64
    try exercise(s, image: image, initial: initial, seed: seed, scratch: scratch)
    if s.options.contains("block_state_zero=off") {
      // Every block of this fixed disk is FULLY_PRESENT: written in place, the file never grows.
      // (qemu's default fixed disk marks its blocks ZERO without an offset; qemu, and this
      // writer, then allocate at the end of the file.)
      #expect(try FileManager.default.attributesOfItem(atPath: image)[.size] as? UInt64 == fileSize)
    }

    let mirror = try [UInt8](Data(contentsOf: URL(fileURLWithPath: scratch.file("mirror.raw"))))
    if s.kind == .differencing {
      #expect(try fileChecksum(base) == baseSum, "\(s.name): the parent changed")
      try expectConsistent(image, expected: mirror, context: "\(s.name) seed \(seed)")
    } else {
      try Qemu.expectCleanAndIdentical(
        image, format: "vhdx", to: scratch.file("mirror.raw"), "\(s.name) seed \(seed)")
    }
  }

  /// vdiskfs's own structural check of an image qemu cannot open: no pending log, a writable open
  /// (which checks every block's placement and overlaps) succeeds, and both opens read `expected`.
  static func expectConsistent(_ image: String, expected: [UInt8], context: String) throws {
    let readOnly = try openChain(image)
    let top = try #require(readOnly.top as? VHDXLayer)
    #expect(top.replayedLogEntries == 0, "\(context): a log entry was left to replay")
    #expect(firstDifference(try readAll(readOnly), expected) == nil, "\(context): read-only open differs")
    let writable = try openWritable(image)
    #expect(
      firstDifference(try readAll(writable, seed: 3), expected) == nil, "\(context): writable open differs")
  }

  /// The random operations, aligned to the layer's write unit; the chain is closed when this
  /// returns.
  static func exercise(
    _ s: VHDXWriteScenario, image: String, initial: [UInt8], seed: UInt64, scratch: Scratch
  ) throws {
    let disk = MirroredDisk(chain: try openWritable(image, cacheSize: s.cacheSize), mirror: initial)
    let unit = try #require(disk.chain.top as? VHDXLayer).writeUnit
    var run = DifferentialRun(name: s.name, seed: seed, ops: s.ops, unit: unit)
    run.lengthCutoffs = (50, 85, 95)
    run.maxWrite = UInt64(s.maxWrite)
    try run.exercise(disk, mirrorPath: scratch.file("mirror.raw"))
  }
}
