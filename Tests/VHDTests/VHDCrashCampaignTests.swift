import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore
import VHD

/// A kill -9 after every single write-back stage in turn (every `pwrite`/`pwritev` and
/// `fdatasync` of the image file, `FaultInjectingSource`), for a dynamic disk and for a
/// differencing one: a workload of allocating writes (new blocks, one write spanning two
/// blocks), overwrites in place, writes setting bitmap bits of allocated blocks and both kinds of
/// discard, with flushes between groups, is run once to count its stages S, then for every N in
/// 0...S on a fresh copy that stops writing after stage N. Each image left behind must have a
/// valid footer at its end (and the copy at 0), BAT entries naming whole blocks before that
/// footer, open in qemu (`qemu-img convert`), and hold every write a completed flush
/// acknowledged, read through vdiskfs (and through qemu for the dynamic disk).
@Suite struct VHDCrashCampaignTests {
  /// 8 MiB dynamic disk, 2 MiB blocks, qemu data in block 0. Writes between two flushes never
  /// overlap (`DurabilityModel`'s rule).
  static let dynamicWorkload: [CrashCampaign.Step] = [
    .write(100_000, count: 3000), .write((2 << 20) + 700, count: 40_000),
    .write((4 << 20) - 1000, count: 3000),
    .flush,
    .write(1000, count: 10_000), .write((6 << 20) + 300, count: 100_000),
    .discard(16384, count: 8192, .punchHole),
    .discard(5 << 20, count: 4096, .zeroRange), .flush,
    .write((2 << 20) + 50_000, count: 20_000), .write((6 << 20) + 200_000, count: 65536),
    .discard((4 << 20) + 50_001, count: 4600, .zeroRange), .flush,
  ]

  /// The 4 MiB differencing disk of `VHDDifferencingTests.makePair` (512 KiB blocks; block 1 has
  /// sectors 0-7 and 100-227, block 3 all of them): new blocks with partial sectors filled from
  /// the parent, bits set in block 1, in place in block 3, zeros over the parent.
  static let differencingWorkload: [CrashCampaign.Step] = [
    .write(100_000, count: 3000), .write((512 << 10) + 4096 + 100, count: 1000),
    .write((3 << 19) + 7, count: 5000),
    .flush,
    .write((1 << 20) + 300, count: 100_000), .discard(200_000, count: 8192, .punchHole),
    .write((2 << 20) + 1, count: 511), .flush,
    .write((512 << 10) + 50 * 512 + 3, count: 20_000), .discard((3 << 20) + 50_001, count: 4600, .zeroRange),
    .write(100_500, count: 1000), .flush,
  ]

  /// With a cache that holds everything, and with a 1-byte budget, where every commit writes
  /// its dirty BAT pages and bitmaps back at once (cache pressure).
  @Test(arguments: [false, true], [32 << 20, 1])
  func crashAfterEveryWritebackStage(differencing: Bool, cacheBudget: Int) throws {
    let scratch = try Scratch("vpc-crash")
    defer { scratch.remove() }
    let pristine: String
    var parent: String?
    let workload: [CrashCampaign.Step]
    if differencing {
      let pair = try VHDDifferencingTests.makePair(in: scratch, childName: "pristine.vhd")
      pristine = pair.child
      parent = pair.parent
      workload = Self.differencingWorkload
    } else {
      pristine = scratch.file("pristine.vhd")
      try Qemu.create(pristine, format: "vpc", size: "8M", options: ["force_size=on"])
      try Qemu.io(pristine, format: "vpc", ["write -P 0x11 0 64k", "write -P 0x12 4M 4096"])
      workload = Self.dynamicWorkload
    }
    let parentSum = try parent.map(fileChecksum)
    let initial = try readAll(openChain(pristine))

    let campaign = CrashCampaign(workload: workload) { image, source in
      try FaultyChain(image, source: source, format: VHDDriver.self, parent: parent, cacheBudget: cacheBudget)
    }

    let full = scratch.file("full.vhd")
    let reference = try campaign.runWhole(
      pristine: pristine, at: full, initial: initial, kinds: [.sync], minStages: 20)
    let stages = reference.stages
    try expectSound(
      full, model: reference.model, checkQemuContent: !differencing, "the whole workload", scratch)
    #expect(reference.model.violation(in: try readAll(openChain(full))) == nil)

    try campaign.crashAtEachStage(
      stages, pristine: pristine, initial: initial, scratch: scratch, fileExtension: "vhd"
    ) { image, outcome, context in
      try expectSound(image, model: outcome.model, checkQemuContent: !differencing, context, scratch)
    }
    if let parent { #expect(try fileChecksum(parent) == parentSum, "the parent changed") }
  }

  /// The layout is sound, qemu opens the image, and the content keeps every acknowledged write.
  func expectSound(
    _ image: String, model: DurabilityModel, checkQemuContent: Bool, _ context: String, _ scratch: Scratch
  ) throws {
    let layout = try VHDLayoutCheck(image, virtualSize: UInt64(model.durable.count))
    #expect(layout.problems.isEmpty, "\(context): \(layout.problems)")
    let converted = try Qemu.rawContent(of: image, format: "vpc", scratch: scratch)
    if checkQemuContent, let v = model.violation(in: converted) {
      Issue.record("\(context), read by qemu: \(v)")
    }
    if let v = model.violation(in: try readAll(openChain(image))) {
      Issue.record("\(context), read by vdiskfs: \(v)")
    }
  }
}
