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

    let report = try VDICheck(image)
    #expect(report.isClean, "\(s.name) seed \(seed): \(report)")
    let (identical, output) = try vdiIdentical(image, scratch.file("mirror.raw"))
    #expect(identical, "\(s.name) seed \(seed): \(output)")
    if s.staticImage {
      // Written in place: the file keeps qemu's size (header, map, every block).
      let blocks = (s.size + blockSize - 1) / blockSize
      #expect(try fileSize(image) == 512 + (blocks * 4 + 511) / 512 * 512 + blocks * blockSize)
    }
  }

  /// The random operations; the chain is closed when this returns.
  static func exercise(_ s: VDIWriteScenario, image: String, initial: [UInt8], seed: UInt64, scratch: Scratch)
    throws
  {
    let disk = MirroredDisk(chain: try openWritableVDI(image, cacheSize: s.cacheSize), mirror: initial)
    var rng = SplitMix64(seed: seed &* 7919 &+ s.size)
    let size = s.size
    func randomRange() -> (UInt64, Int) {
      let kind = rng.next() % 100
      let limit: UInt64 = kind < 50 ? 8192 : kind < 85 ? 256 << 10 : kind < 96 ? 1 << 20 : 4 << 20
      var length = 1 + rng.next() % min(limit, size)
      var offset = rng.next() % (size - length + 1)
      if rng.next() % 3 == 0 {
        // Block-aligned ranges exercise whole-block paths.
        offset &= ~(blockSize - 1)
        length = max(blockSize, length & ~(blockSize - 1))
        if offset + length > size { length = size - offset }
      }
      return (offset, Int(length))
    }
    for step in 0..<s.ops {
      let op = rng.next() % 100
      let (offset, length) = randomRange()
      switch op {
      case 0..<50:
        try disk.write(at: offset, count: length)
      case 50..<72:
        if let d = try disk.verify(at: offset, count: length) {
          Issue.record("\(s.name) seed \(seed) step \(step): \(d)")
          return
        }
      case 72..<80:
        try disk.discard(at: offset, count: length, mode: .punchHole)
      case 80..<88:
        try disk.discard(at: offset, count: length, mode: .zeroRange)
      case 88..<95:
        try disk.chain.flush()
      default:
        if step % 4 == 0, let d = try disk.verifyAll() {
          Issue.record("\(s.name) seed \(seed) step \(step) (full check): \(d)")
          return
        }
      }
    }
    try disk.chain.flush()
    if let d = try disk.verifyAll() { Issue.record("\(s.name) seed \(seed) at the end: \(d)") }
    try disk.saveMirror(scratch.file("mirror.raw"))
  }
}
