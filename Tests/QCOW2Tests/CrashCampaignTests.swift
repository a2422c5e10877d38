import Foundation
import QCOW2
import TestSupport
import Testing
import VDiskCore

/// A kill -9 after every single write-back stage in turn: a workload of allocating writes (new
/// clusters, new L2 tables, a new refcount block), overwrites in place, writes spanning L2
/// tables and both kinds of discard, with flushes between groups, is run once to count its
/// stages S (every `pwrite`/`pwritev`, `fdatasync` and `ftruncate` of the image file), then for
/// every N in 0...S on a fresh copy that stops writing after stage N. Each image left behind must
/// pass `qemu-img check` (leaks allowed) and hold every write a completed flush acknowledged,
/// read both through vdiskfs and through `qemu-img convert`.
///
/// Written against `LayerChain`'s public write/discard/flush only, so it judges whatever write
/// engine sits behind them.
@Suite struct CrashCampaignTests {
  /// 512-byte clusters: an L2 table covers 32 KiB of guest, a refcount block 128 KiB of host.
  /// Writes between two flushes never overlap (`DurabilityModel`'s rule).
  static let workload: [CrashCampaign.Step] = [
    // Allocations: new L2 tables, one write spanning two of them.
    .write(100_000, count: 3000), .write((1 << 20) + 700, count: 40_000), .write(3 << 20, count: 512), .flush,
    // In place over qemu's data; 200 new clusters (the first refcount block fills up); a hole.
    .write(1000, count: 10_000), .write((2 << 20) + 300, count: 100_000),
    .discard(16384, count: 8192, .punchHole), .flush,
    // Partly over the first group's clusters; another table; zeroes with unaligned edges.
    .write((1 << 20) + 10_000, count: 20_000), .write((3 << 20) + 100_000, count: 65536),
    .discard((2 << 20) + 50_001, count: 4600, .zeroRange), .flush,
  ]

  /// With a cache that holds every table, and with one of four 512-byte tables, where dirty
  /// tables may have to be written back (in order) to make room.
  @Test(arguments: [32 << 20, 2048])
  func crashAfterEveryWritebackStage(cacheBudget: Int) throws {
    let scratch = try Scratch("crash-campaign")
    defer { scratch.remove() }
    let pristine = scratch.file("pristine.qcow2")
    try Qemu.create(pristine, size: "4M", options: ["cluster_size=512"])
    try Qemu.io(pristine, ["write -P 0x11 0 64k"])
    let initial = try Qemu.rawContent(of: pristine, scratch: scratch)
    let campaign = CrashCampaign(workload: Self.workload) { image, source in
      try FaultyChain(image, source: source, format: QCOW2Driver.self, cacheBudget: cacheBudget)
    }

    // The whole workload once: its stages, and the image it leaves.
    let full = scratch.file("full.qcow2")
    let reference = try campaign.runWhole(
      pristine: pristine, at: full, initial: initial, kinds: [.write, .sync], minStages: 20)
    let stages = reference.stages
    try Qemu.expectCheck(full, format: "qcow2", leaksAllowed: true, "the whole workload")
    #expect(try Qemu.check(full, format: "qcow2").leaks == 0)
    #expect(reference.model.violation(in: try Qemu.rawContent(of: full, scratch: scratch)) == nil)
    #expect(try field(full, at: 48, width: 8) != 0)

    // Then a crash after each stage (0: before the first).
    try campaign.crashAtEachStage(
      stages, points: CrashCampaign.crashPoints(stages, limit: 150), pristine: pristine, initial: initial,
      scratch: scratch, fileExtension: "qcow2"
    ) { image, outcome, context in
      try Qemu.expectCheck(image, format: "qcow2", leaksAllowed: true, context)
      try CrashCampaign.expectDurable(image, outcome.model, scratch: scratch, context)
    }
  }

  /// The sample of a long write-back keeps both sides of every sync and stays near the limit.
  @Test func longWritebacksAreSampled() {
    let stages = (1...400).map { n in
      FaultInjectingSource.Stage(number: n, kind: n % 50 == 0 ? .sync : .write, offset: 0, length: 512)
    }
    let points = CrashCampaign.crashPoints(stages, limit: 100)
    #expect(points.count <= 110 && points.count >= 50, "\(points.count)")
    #expect(points.first == 0 && points.last == 400)
    for n in stride(from: 50, through: 400, by: 50) { #expect(points.contains(n - 1) && points.contains(n)) }
    #expect(CrashCampaign.crashPoints(Array(stages.prefix(30)), limit: 100) == Array(0...30))
  }
}
