import Foundation
import TestSupport
import Testing
import VDI
import VDiskCore

/// A kill -9 after every single write-back stage in turn, on a dynamic vdi: a workload of
/// allocating writes (one block, two blocks in one write), overwrites in place and both kinds of
/// discard, with flushes between groups, is run once to count its stages S (every
/// `pwrite`/`pwritev`, `fdatasync` and `ftruncate` of the image file), then for every N in 0...S
/// on a fresh copy that stops writing after stage N. Each image left behind must pass
/// `qemu-img check` (a vdi has no leaks to allow: the count and the map must agree) and hold
/// every write a completed flush acknowledged, read through vdiskfs and through qemu.
@Suite struct VDICrashCampaignTests {
  static let mib = 1 << 20

  /// Writes between two flushes never overlap (`DurabilityModel`'s rule).
  static let workload: [CrashCampaign.Step] = [
    // In place over qemu's block 0; a new block; one write allocating blocks 2 and 3.
    .write(100_000, count: 3000), .write(mib + 700, count: 40_000), .write(3 * mib - 100, count: 512), .flush,
    // In place; a new block at an odd offset; a hole punched in an allocated and in a free block.
    .write(1000, count: 10_000), .write(5 * mib + 300, count: 100_000),
    .discard(16384, count: 8192, .punchHole), .discard(6 * mib, count: mib, .punchHole), .flush,
    // Over the first group's blocks; a new last block; zeroes with unaligned edges.
    .write(mib + 10_000, count: 20_000), .write(7 * mib + 100_000, count: 65536),
    .discard(2 * mib + 50_001, count: 4600, .zeroRange), .flush,
  ]

  /// With a cache that holds every page, and with a budget below one page, where every
  /// allocating write writes the map back at once.
  @Test(arguments: [32 << 20, 64])
  func crashAfterEveryWritebackStage(cacheBudget: Int) throws {
    let scratch = try Scratch("vdi-crash")
    defer { scratch.remove() }
    let pristine = scratch.file("pristine.vdi")
    try Qemu.create(pristine, format: "vdi", size: "8M", options: ["static=off"])
    try Qemu.io(pristine, format: "vdi", ["write -P 0x11 0 64k"])
    let initial = try Qemu.rawContent(of: pristine, scratch: scratch)

    let campaign = CrashCampaign(workload: Self.workload) { image, source in
      try FaultyChain(image, source: source, format: VDIDriver.self, cacheBudget: cacheBudget)
    }

    let full = scratch.file("full.vdi")
    let reference = try campaign.runWhole(
      pristine: pristine, at: full, initial: initial, kinds: [.gatheringWrite, .write, .sync, .extend],
      minStages: 15)
    let stages = reference.stages
    try Qemu.expectCheck(full, format: "vdi", "the whole workload")
    #expect(reference.model.violation(in: try Qemu.rawContent(of: full, scratch: scratch)) == nil)
    // Blocks 0, 1, 2, 3, 5 and 7 are allocated; 6 (punched while free) is not.
    #expect(try u32LE(full, at: 0x184) == 6)

    try campaign.crashAtEachStage(
      stages, pristine: pristine, initial: initial, scratch: scratch, fileExtension: "vdi"
    ) { image, outcome, context in
      try Qemu.expectCheck(image, format: "vdi", context)
      try CrashCampaign.expectDurable(image, outcome.model, scratch: scratch, context)
    }
  }
}
