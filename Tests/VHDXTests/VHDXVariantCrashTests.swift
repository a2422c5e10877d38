import Foundation
import TestSupport
import Testing
import VDiskCore

@testable import VHDX

/// The crash campaign (`VHDXCrashCampaignTests`: a kill -9 after every write stage in turn) for
/// the two other kinds of VHDX vdiskfs writes: a fixed disk as qemu makes it (its blocks start
/// in the ZERO state without space, so writing them allocates, as in a dynamic disk, through
/// the log) and a differencing child (built in test code over a qemu-made parent: new blocks
/// record their sectors in sector bitmap blocks, also through the log). `make test` runs a
/// sample of the crash points; VDISKFS_FAULT_ALL=1 runs them all.
@Suite struct VHDXVariantCrashTests {
  /// Every stage with VDISKFS_FAULT_ALL=1; else, for `make test` to stay short, 0 (before the
  /// first stage) and a sample of about 8 (`FaultCampaign.points`: some syncs, an even spread).
  static func points(_ stages: [FaultInjectingSource.Stage]) -> [Int]? {
    if ProcessInfo.processInfo.environment["VDISKFS_FAULT_ALL"] == "1" { return nil }
    return [0] + FaultCampaign.points(stages, limit: 8)
  }

  /// A fixed 8 MiB disk with 1 MiB blocks whose first 2 MiB qemu wrote.
  static let fixedWorkload: [CrashCampaign.Step] = [
    // In place in qemu's block; a new block; one write spanning two new blocks.
    .write(100_000, count: 3000), .write((3 << 20) + 700, count: 40_000),
    .write((5 << 20) - 1000, count: 3000), .flush,
    // A hole over a whole qemu block (a fixed disk keeps it: zeros written); in place in a new
    // block; zeros with unaligned edges.
    .discard(1 << 20, count: 1 << 20, .punchHole), .write((3 << 20) + 50_000, count: 4000),
    .discard((4 << 20) + 50_001, count: 4600, .zeroRange), .flush,
  ]

  @Test func fixedCrashAfterEveryStage() throws {
    let scratch = try Scratch("vhdx-fixed-crash")
    defer { scratch.remove() }
    let pristine = scratch.file("pristine.vhdx")
    try Qemu.create(pristine, format: "vhdx", size: "8M", options: ["subformat=fixed", "block_size=1M"])
    try Qemu.io(pristine, format: "vhdx", ["write -P 0x11 0 2M"])
    let initial = try Qemu.rawContent(of: pristine, scratch: scratch)
    let campaign = CrashCampaign(workload: Self.fixedWorkload) { image, source in
      try FaultyChain(image, source: source, format: VHDXDriver.self)
    }
    let full = scratch.file("full.vhdx")
    let reference = try campaign.runWhole(
      pristine: pristine, at: full, initial: initial, kinds: [.write, .sync], minStages: 15)
    #expect(try Qemu.check(full, format: "vhdx").isClean)
    #expect(reference.model.violation(in: try Qemu.rawContent(of: full, scratch: scratch)) == nil)

    try campaign.crashAtEachStage(
      reference.stages, points: Self.points(reference.stages), pristine: pristine, initial: initial,
      scratch: scratch, fileExtension: "vhdx"
    ) { image, outcome, context in
      try VHDXCrashCampaignTests.expectRecovers(image, outcome.model, context: context, scratch: scratch)
    }
  }

  /// An 8 MiB child over `DifferencingTests.makeParent` (qemu data at 0-3 MiB, 4-6 MiB and
  /// 7-7.5 MiB), with block 1 partly present (sectors 0-15) and block 5 full.
  static let differencingWorkload: [CrashCampaign.Step] = [
    // Sectors of a new block over parent data; more sectors of block 1; in place in block 5.
    .write(100_003, count: 3000), .write((1 << 20) + 20_000, count: 5000),
    .write((5 << 20) + 700, count: 40_000), .flush,
    // Over the parent's data where the child has nothing: zeros, not the parent; a new block
    // past the parent's data; sectors of the first group's block again.
    .discard(4 << 20, count: 1 << 20, .punchHole), .write((6 << 20) + 300, count: 10_000),
    .write(110_000, count: 512), .discard((7 << 20) + 1000, count: 3000, .zeroRange), .flush,
  ]

  @Test func differencingCrashAfterEveryStage() throws {
    let scratch = try Scratch("vhdx-diff-crash")
    defer { scratch.remove() }
    let base = scratch.file("base.vhdx")
    let (guid, parent) = try DifferencingTests.makeParent(base, size: "8M", scratch: scratch)
    var child = DifferencingTests.child(size: 8 << 20, linkage: guid)
    child.blocks = [1: .partial(0xC1, [0..<16]), 5: .full(0xC5)]
    let pristine = scratch.file("pristine.vhdx")
    try child.write(to: pristine)
    let initial = child.expected(over: parent)
    let parentSum = try fileChecksum(base)
    let campaign = CrashCampaign(workload: Self.differencingWorkload) { image, source in
      try FaultyChain(image, source: source, format: VHDXDriver.self, parent: base)
    }
    let full = scratch.file("full.vhdx")
    let reference = try campaign.runWhole(
      pristine: pristine, at: full, initial: initial, kinds: [.write, .sync], minStages: 15)
    try Self.expectRecoversByVdiskfs(full, reference.model, context: "the whole workload")

    try campaign.crashAtEachStage(
      reference.stages, points: Self.points(reference.stages), pristine: pristine, initial: initial,
      scratch: scratch, fileExtension: "vhdx"
    ) { image, outcome, context in
      try Self.expectRecoversByVdiskfs(image, outcome.model, context: context)
    }
    #expect(try fileChecksum(base) == parentSum, "the parent changed")
  }

  /// For images qemu cannot open (differencing VHDX): read-only, the log replayed in memory and
  /// the file untouched; then replayed into the file by a read-write open; both hold `model`.
  static func expectRecoversByVdiskfs(_ image: String, _ model: DurabilityModel, context: String) throws {
    let before = try fileChecksum(image)
    if let v = model.violation(in: try readAll(try openChain(image))) {
      Issue.record("\(context), read by vdiskfs: \(v)")
    }
    #expect(try fileChecksum(image) == before, "\(context): a read-only open changed the file")
    try openWritable(image).flush()
    let replayed = try openChain(image)
    #expect(try #require(replayed.top as? VHDXLayer).replayedLogEntries == 0, "\(context): a log is left")
    if let v = model.violation(in: try readAll(replayed)) {
      Issue.record("\(context), after vdiskfs's replay: \(v)")
    }
  }
}
