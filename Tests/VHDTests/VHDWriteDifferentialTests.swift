import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore
import VHD

/// One kind of vpc image for the randomized differential test.
struct VHDWriteScenario: Sendable, CustomTestStringConvertible {
  enum Kind: Sendable { case fixed, dynamic, builtDynamic, differencing }
  var name: String
  var kind: Kind
  var size: UInt64 = 24 << 20
  /// qemu-io writes before the test (a dynamic disk with blocks allocated by qemu).
  var prefill = false
  var seeds: [UInt64] = [1, 2]
  var ops = 300
  var maxWrite = 4 << 20
  var testDescription: String { name }
}

/// Random writes (1 byte to 4 MiB, aligned and not), reads, punched holes, zeroed ranges and
/// flushes on a chain and on a mirror, compared as they go; then the file's layout must be sound
/// (`VHDLayoutCheck`), a fresh read-only open must read the mirror, and `qemu-img compare` must
/// find the image identical to the mirror. For a differencing disk (qemu reads it as a plain
/// dynamic one), every sector whose bitmap bit is set must equal qemu's conversion of the child
/// and the parent must not change.
@Suite struct VHDWriteDifferentialTests {
  static let scenarios: [VHDWriteScenario] = [
    VHDWriteScenario(name: "fixed", kind: .fixed, size: 12 << 20),
    VHDWriteScenario(name: "dynamic, empty", kind: .dynamic),
    VHDWriteScenario(name: "dynamic, filled by qemu", kind: .dynamic, prefill: true, seeds: [3, 4]),
    VHDWriteScenario(
      name: "dynamic built here: 512 KiB blocks, partial bitmaps, a partial last block", kind: .builtDynamic,
      size: (6 << 20) + 100 * 512, seeds: [7], maxWrite: 1 << 20),
    VHDWriteScenario(
      name: "differencing over a dynamic parent", kind: .differencing, seeds: [5, 6], maxWrite: 1 << 20),
  ]

  @Test(arguments: scenarios)
  func randomized(_ scenario: VHDWriteScenario) throws {
    for seed in scenario.seeds {
      try Self.run(scenario, seed: seed)
    }
  }

  static func run(_ s: VHDWriteScenario, seed: UInt64) throws {
    let scratch = try Scratch("vpc-write")
    defer { scratch.remove() }
    var image = scratch.file("disk.vhd")
    var parent: String?
    switch s.kind {
    case .fixed, .dynamic:
      try Qemu.create(
        image, format: "vpc", size: "\(s.size)",
        options: ["subformat=\(s.kind == .fixed ? "fixed" : "dynamic")"])
      if s.prefill || s.kind == .fixed {
        try Qemu.scatterPatterns(
          image, format: "vpc", size: s.size / 2, count: 20, seed: seed, maxUnits: 2048)
      }
    case .builtDynamic:
      try Self.buildDynamic(image, size: s.size)
    case .differencing:
      let pair = try VHDDifferencingTests.makePair(in: scratch)
      image = pair.child
      parent = pair.parent
      #expect(try readAll(openChain(image)) == pair.expected)
    }
    let parentSum = try parent.map(fileChecksum)
    let initial = try readAll(openChain(image))
    if s.kind != .differencing {
      #expect(initial == (try Qemu.rawContent(of: image, format: "vpc", scratch: scratch)))
    }
    let sizeBefore = try fileSize(image)
    let footerBefore = try readBytes(image, at: sizeBefore - 512, count: 512)

    try exercise(s, image: image, initial: initial, seed: seed)

    let mirror = try [UInt8](Data(contentsOf: URL(fileURLWithPath: scratch.file("mirror.raw"))))
    let layout = try VHDLayoutCheck(image, virtualSize: UInt64(mirror.count))
    #expect(layout.problems.isEmpty, "\(s.name) seed \(seed): \(layout.problems)")
    let reread = try readAll(openChain(image))
    #expect(firstDifference(reread, mirror) == nil, "\(s.name) seed \(seed): reopened image differs")
    // A writable open runs the writer's own checks of the layout.
    _ = try openWritable(image)
    if let parent {
      #expect(try fileChecksum(parent) == parentSum, "\(s.name): the parent changed")
      let qemuChild = try Qemu.rawContent(of: image, format: "vpc", scratch: scratch)
      let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: image)))
      var wrong: [Int] = []
      var held = 0
      let qemuParent = try Qemu.rawContent(of: parent, format: "vpc", scratch: scratch)
      for sector in 0..<mirror.count / 512 {
        // A held sector is the child's (qemu reads the child's block data), any other the parent's.
        let isHeld = layout.sectorHeld(sector, file: bytes)
        if isHeld { held += 1 }
        let source = isHeld ? qemuChild : qemuParent
        if !same(source, sector * 512, Array(mirror[sector * 512..<(sector + 1) * 512])) {
          wrong.append(sector)
        }
      }
      // The writes allocated blocks and set bits: the check covers much of the disk.
      #expect(held > 2000, "\(s.name) seed \(seed): only \(held) sectors held")
      #expect(
        wrong.isEmpty,
        "\(s.name) seed \(seed): sectors differ from qemu's child or parent, first \(wrong.prefix(8))")
    } else {
      let (identical, output) = try Qemu.identical(image, format: "vpc", to: scratch.file("mirror.raw"))
      #expect(identical, "\(s.name) seed \(seed): \(output)")
    }
    let sizeAfter = try fileSize(image)
    if s.kind == .fixed {
      // Written in place: same size, same footer.
      #expect(sizeAfter == sizeBefore)
    }
    #expect(
      try readBytes(image, at: sizeAfter - 512, count: 512) == footerBefore, "\(s.name): the footer changed")
  }

  /// A dynamic disk with 512 KiB blocks (qemu makes only 2 MiB ones): block 1 holds sectors
  /// 0-499 (its other sectors read as zeros, and hold zeros, so that qemu, which ignores the
  /// bitmap, reads the same), block 4 all of them, and the last block, which the disk uses only
  /// 100 sectors of, all of them.
  static func buildDynamic(_ path: String, size: UInt64) throws {
    var disk = VHDBuilder(virtualSize: size)
    disk.diskType = 3
    let block = Int(disk.blockSize)
    var bitmap1 = [UInt8](repeating: 0, count: 512)
    var data1 = [UInt8](repeating: 0, count: block)
    for s in 0..<500 {
      bitmap1[s / 8] |= 0x80 >> UInt8(s % 8)
      data1.replaceSubrange(
        s * 512..<(s + 1) * 512, with: repeatElement(UInt8(truncatingIfNeeded: s | 1), count: 512))
    }
    let full = [UInt8](repeating: 0xFF, count: 512)
    disk.blocks = [
      1: (bitmap1, data1), 4: (full, [UInt8](repeating: 0x6D, count: block)),
      disk.entries - 1: (full, [UInt8](repeating: 0x7E, count: block)),
    ]
    try disk.write(to: path)
  }

  /// The random operations (aligned to whole blocks or to sectors, or not); the chain is closed
  /// when this returns, its mirror saved.
  static func exercise(_ s: VHDWriteScenario, image: String, initial: [UInt8], seed: UInt64) throws {
    let disk = MirroredDisk(chain: try openWritable(image), mirror: initial)
    let unit: UInt64 = s.kind == .differencing || s.kind == .builtDynamic ? 512 << 10 : 2 << 20
    var run = DifferentialRun(name: s.name, seed: seed, ops: s.ops, unit: unit)
    run.alignment = .unitOrSector
    run.maxWrite = UInt64(s.maxWrite)
    run.mix = .evenDiscards
    try run.exercise(
      disk, mirrorPath: URL(fileURLWithPath: image).deletingLastPathComponent().path + "/mirror.raw")
  }
}
