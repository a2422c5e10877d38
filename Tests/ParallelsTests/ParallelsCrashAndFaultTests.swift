import Foundation
import Parallels
import TestSupport
import Testing
import VDiskCore

/// What `qemu-img check` may say of a Parallels image a crash or a failed write-back left: only
/// that it was not closed cleanly (in_use set: QEMU's check always counts that as an error) and
/// space leaked at its end; and `qemu-img check -r all` of a copy must then find it clean.
func expectRepairableParallels(
  _ image: String, scratch: Scratch, _ context: String, sourceLocation: SourceLocation = #_sourceLocation
) throws {
  let report = try Qemu.check(image, format: "parallels")
  let faults = report.output.split(separator: "\n").filter {
    $0.contains("ERROR") && !$0.contains("image was not closed correctly")
      && !$0.contains("space leaked at the end of the image")
  }
  #expect(faults.isEmpty && report.status != 1, "\(context): \(report)", sourceLocation: sourceLocation)
  let copy = scratch.file("repair-\(UUID().uuidString.prefix(8)).hds")
  try FileManager.default.copyItem(atPath: image, toPath: copy)
  defer { try? FileManager.default.removeItem(atPath: copy) }
  _ = try Qemu.check(copy, format: "parallels", repair: true)
  let repaired = try Qemu.check(copy, format: "parallels")
  #expect(
    repaired.isClean, "\(context), after qemu-img check -r all: \(repaired)", sourceLocation: sourceLocation)
}

/// A kill -9 after every write-back stage in turn, and EIO / ENOSPC at every stage and on every
/// read, on an expanding image of 64 KiB clusters (`CrashCampaign`, `FaultCampaign`).
@Suite struct ParallelsCrashAndFaultTests {
  static let kib = 1 << 10
  /// Writes between two flushes never overlap (`DurabilityModel`'s rule).
  static let workload: [CrashCampaign.Step] = [
    // In place over qemu's cluster 0; a new cluster; one write allocating clusters 3 and 4.
    .write(10_000, count: 3000), .write(64 * kib + 700, count: 40_000), .write(256 * kib - 100, count: 512),
    .flush,
    // In place; a new cluster far out; a hole punched in an allocated and in a free cluster.
    .write(1000, count: 5000), .write(5 << 20, count: 100_000),
    .discard(16384, count: 8192, .punchHole), .discard(6 << 20, count: 64 * kib, .punchHole), .flush,
    // Over the first group's clusters; zeros with unaligned edges.
    .write(64 * kib + 10_000, count: 20_000), .discard(256 * kib + 50_001, count: 4600, .zeroRange), .flush,
  ]

  static func pristine(_ scratch: Scratch) throws -> (String, [UInt8]) {
    let pristine = scratch.file("pristine.hds")
    try Qemu.create(pristine, format: "parallels", size: "8M", options: ["cluster_size=64k"])
    try Qemu.io(pristine, format: "parallels", ["write -P 0x11 0 64k"])
    return (pristine, try Qemu.rawContent(of: pristine, scratch: scratch))
  }

  @Test(arguments: [32 << 20, 64])
  func crashAfterEveryWritebackStage(cacheBudget: Int) throws {
    let scratch = try Scratch("prl-crash")
    defer { scratch.remove() }
    let (pristine, initial) = try Self.pristine(scratch)
    let campaign = CrashCampaign(workload: Self.workload) { image, source in
      try FaultyChain(image, source: source, format: ParallelsDriver.self, cacheBudget: cacheBudget)
    }
    let full = scratch.file("full.hds")
    let reference = try campaign.runWhole(
      pristine: pristine, at: full, initial: initial, kinds: [.gatheringWrite, .write, .sync, .extend],
      minStages: 15)
    try Qemu.expectCheck(full, format: "parallels", "the whole workload")
    #expect(reference.model.violation(in: try Qemu.rawContent(of: full, scratch: scratch)) == nil)
    try campaign.crashAtEachStage(
      reference.stages, pristine: pristine, initial: initial, scratch: scratch, fileExtension: "hds"
    ) { image, outcome, context in
      try expectRepairableParallels(image, scratch: scratch, context)
      try CrashCampaign.expectDurable(image, outcome.model, scratch: scratch, context)
    }
  }

  @Test(arguments: [false, true])
  func faultAtEachStageOrRead(reads: Bool) throws {
    let scratch = try Scratch("prl-faults")
    defer { scratch.remove() }
    let (pristine, initial) = try Self.pristine(scratch)
    let crash = CrashCampaign(workload: Self.workload) { image, source in
      try FaultyChain(image, source: source, format: ParallelsDriver.self, cacheBudget: reads ? 64 : 32 << 20)
    }
    let reference = try crash.runWhole(
      pristine: pristine, at: scratch.file("full.hds"), initial: initial, kinds: [.write, .sync], minStages: 8
    )
    _ = try FaultCampaign(crash).faultAtEach(
      reads ? .reads : .stages(reference.stages), pristine: pristine, initial: initial,
      reference: reference.model.durable, scratch: scratch, fileExtension: "hds"
    ) { image, model, context in
      try expectRepairableParallels(image, scratch: scratch, context)
      try FaultCampaign.expectHolds(image, model, format: "parallels", scratch: scratch, context)
    } afterwards: { image, context in
      try Qemu.expectCheck(image, format: "parallels", context)
    }
  }

  @Test func eachReadFailing() throws {
    let scratch = try Scratch("prl-read-faults")
    defer { scratch.remove() }
    let image = scratch.file("r.hds")
    try Qemu.create(image, format: "parallels", size: "8M", options: ["cluster_size=64k"])
    try Qemu.io(image, format: "parallels", ["write -P 0x31 0 200k", "write -P 0x32 5M 64k"])
    let expected = try Qemu.rawContent(of: image, scratch: scratch)
    try expectEachReadFaultFailsOnlyThatRead(image, expected: expected) { image, source in
      try FaultyChain(image, source: source, format: ParallelsDriver.self, writable: false)
    }
  }
}
