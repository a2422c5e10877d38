import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore
import VMDK

/// One kind of vmdk for the randomized differential test.
struct VMDKWriteScenario: Sendable, CustomTestStringConvertible {
  enum Layout: Sendable {
    /// `qemu-img create -f vmdk -o subformat=…` (plus `options`).
    case qemu(subformat: String)
    /// Three 8 MiB sparse extents (qemu-made) under a hand-written descriptor.
    case threeSparseExtents
    /// A flat extent with a start offset, then a sparse one, under a hand-written descriptor.
    case flatThenSparse
    /// A monolithicSparse delta over a monolithicSparse parent holding data.
    case delta
  }
  var name: String
  var layout: Layout
  var options: [String] = []
  var size: UInt64 = 40 << 20
  var startFull = false
  /// Empty every grain directory entry but the first (tables unallocated) before writing.
  var emptyDirectory = false
  var seeds: [UInt64] = [1, 2]
  var ops = 300

  var testDescription: String { name }
}

/// Random writes (1 byte to 4 MiB, aligned and not), reads, discards (punch hole, zero range)
/// and flushes on a vmdk chain and on an in-memory mirror, compared as they go; then `qemu-img
/// check` must find the image clean and `qemu-img compare` identical to the mirror. A parent
/// must not change.
@Suite struct VMDKWriteDifferentialTests {
  static let scenarios: [VMDKWriteScenario] = [
    VMDKWriteScenario(name: "monolithicSparse", layout: .qemu(subformat: "monolithicSparse")),
    VMDKWriteScenario(
      name: "monolithicSparse, pre-filled", layout: .qemu(subformat: "monolithicSparse"), startFull: true,
      seeds: [3]),
    VMDKWriteScenario(
      name: "monolithicSparse, zeroed grains", layout: .qemu(subformat: "monolithicSparse"),
      options: ["zeroed_grain=on"]),
    VMDKWriteScenario(
      name: "monolithicSparse, no grain tables yet", layout: .qemu(subformat: "monolithicSparse"),
      emptyDirectory: true, seeds: [4]),
    VMDKWriteScenario(
      name: "monolithicSparse, zeroed grains, no grain tables yet",
      layout: .qemu(subformat: "monolithicSparse"),
      options: ["zeroed_grain=on"], emptyDirectory: true, seeds: [5]),
    VMDKWriteScenario(name: "twoGbMaxExtentSparse", layout: .qemu(subformat: "twoGbMaxExtentSparse")),
    VMDKWriteScenario(
      name: "twoGbMaxExtentSparse, pre-filled", layout: .qemu(subformat: "twoGbMaxExtentSparse"),
      startFull: true, seeds: [6]),
    VMDKWriteScenario(name: "monolithicFlat", layout: .qemu(subformat: "monolithicFlat")),
    VMDKWriteScenario(
      name: "monolithicFlat, pre-filled", layout: .qemu(subformat: "monolithicFlat"), startFull: true,
      seeds: [7]),
    VMDKWriteScenario(name: "twoGbMaxExtentFlat", layout: .qemu(subformat: "twoGbMaxExtentFlat"), seeds: [8]),
    VMDKWriteScenario(name: "three sparse extents", layout: .threeSparseExtents, size: 24 << 20),
    VMDKWriteScenario(name: "flat then sparse extent", layout: .flatThenSparse, size: 16 << 20, seeds: [9]),
    VMDKWriteScenario(name: "delta over a sparse parent", layout: .delta),
  ]

  @Test(arguments: scenarios)
  func randomized(_ scenario: VMDKWriteScenario) throws {
    for seed in scenario.seeds {
      try Self.run(scenario, seed: seed)
    }
  }

  /// Makes the image of `s` in `scratch`; returns its path and the parent's (for a delta).
  static func make(_ s: VMDKWriteScenario, seed: UInt64, scratch: Scratch) throws -> (String, String?) {
    let image = scratch.file("disk.vmdk")
    switch s.layout {
    case .qemu(let subformat):
      try Qemu.create(
        image, format: "vmdk", size: "\(s.size)", options: ["subformat=\(subformat)"] + s.options)
      if s.startFull { try Qemu.io(image, format: "vmdk", ["write -P 0x3c 0 \(s.size)"]) }
      try Qemu.scatterPatterns(image, format: "vmdk", size: s.size, count: 20, seed: seed, maxUnits: 256)
      if s.emptyDirectory {
        // After qemu wrote (QEMU itself cannot allocate grain tables): every table but the first
        // is dropped, its data with it.
        let fields = try SparseHeaderFields(image)
        try fields.emptyDirectoryEntries(image, Array(1..<fields.directoryEntries))
      }
      return (image, nil)
    case .threeSparseExtents:
      let part = s.size / 3
      var lines = ""
      for name in ["a", "b", "c"] {
        try Qemu.create(
          scratch.file("\(name).vmdk"), format: "vmdk", size: "\(part)",
          options: ["subformat=twoGbMaxExtentSparse"])
        lines += "RW \(part / 512) SPARSE \"\(name)-s001.vmdk\"\n"
      }
      try writeDescriptor(image, createType: "twoGbMaxExtentSparse", extents: lines)
      try Qemu.scatterPatterns(image, format: "vmdk", size: s.size, count: 20, seed: seed, maxUnits: 256)
      return (image, nil)
    case .flatThenSparse:
      let half = s.size / 2
      // The flat extent starts 1 MiB into its file; the first MiB must never change.
      let flat = scratch.file("data-flat.bin")
      try Data([UInt8](repeating: 0xee, count: 1 << 20) + [UInt8](repeating: 0, count: Int(half))).write(
        to: URL(fileURLWithPath: flat))
      try Qemu.create(
        scratch.file("s.vmdk"), format: "vmdk", size: "\(half)", options: ["subformat=twoGbMaxExtentSparse"])
      try writeDescriptor(
        image, createType: "twoGbMaxExtentSparse",
        extents: "RW \(half / 512) FLAT \"data-flat.bin\" 2048\nRW \(half / 512) SPARSE \"s-s001.vmdk\"\n")
      try Qemu.scatterPatterns(image, format: "vmdk", size: s.size, count: 20, seed: seed, maxUnits: 256)
      return (image, nil)
    case .delta:
      let parent = scratch.file("parent.vmdk")
      try Qemu.create(parent, format: "vmdk", size: "\(s.size)", options: ["subformat=monolithicSparse"])
      try Qemu.scatterPatterns(
        parent, format: "vmdk", size: s.size, count: 40, seed: seed &+ 100, maxUnits: 512)
      try Qemu.create(image, format: "vmdk", size: "\(s.size)", backing: "parent.vmdk", backingFormat: "vmdk")
      try Qemu.scatterPatterns(image, format: "vmdk", size: s.size, count: 20, seed: seed, maxUnits: 256)
      return (image, parent)
    }
  }

  static func writeDescriptor(_ path: String, createType: String, extents: String) throws {
    let text = """
      # Disk DescriptorFile
      version=1
      CID=12345678
      parentCID=ffffffff
      createType="\(createType)"

      # Extent description
      \(extents)
      ddb.virtualHWVersion = "4"

      """
    try Data(text.utf8).write(to: URL(fileURLWithPath: path))
  }

  static func run(_ s: VMDKWriteScenario, seed: UInt64) throws {
    let scratch = try Scratch("vmdk-write")
    defer { scratch.remove() }
    let (image, parent) = try make(s, seed: seed, scratch: scratch)
    let parentSum = try parent.map(fileChecksum)
    let parentCID = try parent.flatMap { try descriptorValue($0, "CID") }
    let childParentCID = try descriptorValue(image, "parentCID")
    let oldCID = try descriptorValue(image, "CID")
    let initial = try Qemu.rawContent(of: image, scratch: scratch)
    #expect(UInt64(initial.count) == s.size)

    try exercise(s, image: image, initial: initial, seed: seed, scratch: scratch)

    try Qemu.expectCleanAndIdentical(
      image, format: "vmdk", to: scratch.file("mirror.raw"), "\(s.name) seed \(seed)")
    let newCID = try descriptorValue(image, "CID")
    #expect(newCID != nil && newCID != oldCID, "\(s.name): CID \(oldCID ?? "-") → \(newCID ?? "-")")
    if let parent {
      #expect(try fileChecksum(parent) == parentSum, "\(s.name): the parent changed")
      #expect(try descriptorValue(parent, "CID") == parentCID)
      #expect(try descriptorValue(image, "parentCID") == childParentCID, "\(s.name): parentCID changed")
      #expect(childParentCID == parentCID)
    }
    if s.layout == .flatThenSparse {
      let head = Array(try readFile(scratch.file("data-flat.bin")).prefix(1 << 20))
      #expect(head == [UInt8](repeating: 0xee, count: 1 << 20), "bytes before the flat extent changed")
    }
  }

  /// The random operations (64 KiB grains); the chain is closed when this returns.
  static func exercise(
    _ s: VMDKWriteScenario, image: String, initial: [UInt8], seed: UInt64, scratch: Scratch
  ) throws {
    let disk = MirroredDisk(chain: try openWritable(image), mirror: initial)
    let run = DifferentialRun(name: s.name, seed: seed, ops: s.ops, unit: 65536)
    try run.exercise(disk, mirrorPath: scratch.file("mirror.raw"))
  }
}

extension VMDKWriteScenario.Layout: Equatable {}
