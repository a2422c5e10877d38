import Foundation
import TestSupport
import Testing
import VDI
import VDiskCore

/// One kind of vdi for the randomized differential test.
struct VDIWriteScenario: Sendable, CustomTestStringConvertible {
  var name: String
  var staticImage = false
  /// Patterns written by qemu-io before vdiskfs opens the image.
  var prefilled = false
  var size: UInt64 = 24 << 20
  /// `--cache-size`; nil for the default.
  var cacheSize: Int?
  var seeds: [UInt64] = [1, 2]
  var ops = 350

  var testDescription: String { name }
}

/// Random writes (1 byte to 4 MiB, block-aligned and not), reads, discards of both kinds and
/// flushes on a vdi and on a mirror, compared as they go; then `qemu-img check` must find the
/// image clean and `qemu-img compare` identical to the mirror.
@Suite struct VDIWriteDifferentialTests {
  static let blockSize: UInt64 = 1 << 20

  static let scenarios: [VDIWriteScenario] = [
    VDIWriteScenario(name: "dynamic, empty"),
    VDIWriteScenario(name: "dynamic, prefilled", prefilled: true),
    VDIWriteScenario(name: "static, empty", staticImage: true),
    VDIWriteScenario(name: "static, prefilled", staticImage: true, prefilled: true),
    // A size that is not a whole number of blocks: the last block is partly outside the disk.
    VDIWriteScenario(name: "dynamic, odd size", prefilled: true, size: (13 << 20) + 7 * 512, seeds: [3]),
    // A budget smaller than one dirty page: every allocating commit writes back.
    VDIWriteScenario(name: "dynamic, tiny cache", prefilled: true, size: 12 << 20, cacheSize: 64, seeds: [4]),
  ]

  @Test(arguments: scenarios)
  func randomized(_ scenario: VDIWriteScenario) throws {
    for seed in scenario.seeds {
      try Self.run(scenario, seed: seed)
    }
  }

  static func run(_ s: VDIWriteScenario, seed: UInt64) throws {
    let scratch = try Scratch("vdi-write")
    defer { scratch.remove() }
    let image = scratch.file("disk.vdi")
    try Qemu.create(
      image, format: "vdi", size: "\(s.size)", options: ["static=\(s.staticImage ? "on" : "off")"])
    if s.prefilled {
      try Qemu.scatterPatterns(image, format: "vdi", size: s.size, count: 12, seed: seed, maxUnits: 4096)
    }
    let initial = try Qemu.rawContent(of: image, scratch: scratch)
    #expect(UInt64(initial.count) == s.size)
    try exercise(s, image: image, initial: initial, seed: seed, scratch: scratch)

    try Qemu.expectCleanAndIdentical(
      image, format: "vdi", to: scratch.file("mirror.raw"), "\(s.name) seed \(seed)")
    if s.staticImage {
      // Written in place: the file keeps qemu's size (header, map, every block).
      let blocks = (s.size + blockSize - 1) / blockSize
      #expect(try fileSize(image) == 512 + (blocks * 4 + 511) / 512 * 512 + blocks * blockSize)
    }
  }

  /// The random operations (aligned to whole blocks or not); the chain is closed when this
  /// returns.
  static func exercise(_ s: VDIWriteScenario, image: String, initial: [UInt8], seed: UInt64, scratch: Scratch)
    throws
  {
    let disk = MirroredDisk(
      chain: try openWritable(image, cacheSize: s.cacheSize, format: VDIDriver.self), mirror: initial)
    var run = DifferentialRun(name: s.name, seed: seed, ops: s.ops, unit: blockSize)
    run.lengthCutoffs = (50, 85, 96)
    run.mix = .evenDiscards
    try run.exercise(disk, mirrorPath: scratch.file("mirror.raw"))
  }
}
