import Foundation
import QED
import TestSupport
import Testing
import VDiskCore

/// A kill -9 after every single write-back stage in turn: a workload of allocating writes (new
/// clusters under an existing L2 table and under new ones, a write spanning two L2 tables),
/// writes in place, zero-cluster overwrites and both kinds of discard, with flushes between
/// groups, is run once to count its stages S (every `pwrite`/`pwritev`, `fdatasync` and size
/// change of the image file), then for every N in 0...S on a fresh copy that stops after stage N.
/// Each image left behind must have no corruption in `qemu-img check` (leaked clusters are what a
/// crash may leave) and hold every write a completed flush acknowledged, read through vdiskfs and
/// through qemu; and a read-write open of it must check and clear a need-check flag left set.
@Suite struct QEDCrashCampaignTests {
  static let kib = 1 << 10
  static let mib = 1 << 20

  /// Writes between two flushes never overlap (`DurabilityModel`'s rule). 4 KiB clusters and
  /// two-cluster tables: an L2 table maps 4 MiB.
  static let workload: [CrashCampaign.Step] = [
    // In place over qemu's data; a new cluster under qemu's table; a new table (4 MiB on).
    .write(1000, count: 3000), .write(mib + 700, count: 40_000), .write(5 * mib + 10, count: 512), .flush,
    // Across the 4 MiB table boundary (one old table, one new); over the zero clusters; holes.
    .write(4 * mib - 6000, count: 12_000), .write(8 * kib, count: 4096),
    .discard(200 * kib, count: 64 * kib, .punchHole), .discard(9 * mib, count: mib, .punchHole), .flush,
    // Over the first groups' clusters; a third new table; zeroes with unaligned edges.
    .write(mib + 10_000, count: 20_000), .write(11 * mib + 100_000, count: 65536),
    .discard(2 * mib + 50_001, count: 4600, .zeroRange), .flush,
  ]

  @Test(arguments: [false, true])
  func crashAfterEveryWritebackStage(withParent: Bool) throws {
    let scratch = try Scratch("qed-crash")
    defer { scratch.remove() }
    let pristine = scratch.file("pristine.qed")
    let options = ["cluster_size=4096", "table_size=2"]
    var parent: String?
    if withParent {
      let base = scratch.file("base.qed")
      try Qemu.create(base, format: "qed", size: "12M", options: options)
      try Qemu.io(base, format: "qed", ["write -P 0x77 0 12M"])
      try Qemu.create(
        pristine, format: "qed", size: "12M", options: options, backing: "base.qed", backingFormat: "qed")
      parent = base
    } else {
      try Qemu.create(pristine, format: "qed", size: "12M", options: options)
    }
    try Qemu.io(pristine, format: "qed", ["write -P 0x11 0 64k", "write -z 8k 8k", "write -P 0x12 1M 4k"])
    let initial = try Qemu.rawContent(of: pristine, scratch: scratch)

    let campaign = CrashCampaign(workload: Self.workload) { image, source in
      try FaultyChain(image, source: source, format: QEDDriver.self, parent: parent)
    }
    let full = scratch.file("full.qed")
    let reference = try campaign.runWhole(
      pristine: pristine, at: full, initial: initial, kinds: [.gatheringWrite, .write, .sync, .extend],
      minStages: 15)
    try Qemu.expectCheck(full, format: "qed", "the whole workload")
    #expect(reference.model.violation(in: try Qemu.rawContent(of: full, scratch: scratch)) == nil)
    #expect(try qedFeatures(full) & needCheckBit == 0)

    try campaign.crashAtEachStage(
      reference.stages, pristine: pristine, initial: initial, scratch: scratch, fileExtension: "qed"
    ) { image, outcome, context in
      try Qemu.expectCheck(image, format: "qed", leaksAllowed: true, context)
      try CrashCampaign.expectDurable(image, outcome.model, format: "qed", scratch: scratch, context)
      _ = try openWritable(image, format: QEDDriver.self)
      #expect(
        try qedFeatures(image) & needCheckBit == 0, "\(context): need-check left set after a checked open")
    }
  }
}
