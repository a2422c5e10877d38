import Foundation
import TestSupport
import Testing
import VDiskCore
import VHDX

/// EIO and ENOSPC from a VHDX at every write-back stage (the header update of opening, blocks,
/// log entries, their application to the BAT, the file's growth, syncs), and EIO on every read
/// (`FaultCampaign`, `expectEachReadFaultFailsOnlyThatRead`): the error reaches the caller with
/// its errno, the image left at the failure recovers by log replay (vdiskfs's, as
/// `VHDXCrashCampaignTests` checks against QEMU's) to a clean image with every flushed write, and
/// the same chain goes on working.
@Suite struct VHDXFaultTests {
  /// 1 MiB blocks over an 8 MiB disk whose first 2 MiB qemu wrote.
  static let workload: [CrashCampaign.Step] = [
    // New blocks (one write spanning two); in place over qemu's data.
    .write(100_000, count: 3000), .write((3 << 20) - 700, count: 40_000),
    .write((1 << 20) + 4096, count: 8192), .flush,
    // A whole-block hole over qemu's first block; in place in a new block; a zeroed range.
    .discard(0, count: 1 << 20, .punchHole), .write((3 << 20) + 10_000, count: 4000),
    .discard((2 << 20) + 1000, count: 70_001, .zeroRange), .flush,
  ]

  @Test func eachWritebackStageFailing() throws { try campaign(reads: false) }

  /// EIO on the reads the workload makes while writing, with a cache too small for every table.
  @Test func eachReadWhileWritingFailing() throws { try campaign(reads: true) }

  /// The fault campaign over `workload`: at its write-back stages, or at its reads.
  func campaign(reads: Bool) throws {
    let scratch = try Scratch("vhdx-stage-faults")
    defer { scratch.remove() }
    let pristine = scratch.file("pristine.vhdx")
    try Qemu.create(pristine, format: "vhdx", size: "8M", options: ["block_size=1M"])
    try Qemu.io(pristine, format: "vhdx", ["write -P 0x11 0 2M"])
    let initial = try Qemu.rawContent(of: pristine, scratch: scratch)
    let crash = CrashCampaign(workload: Self.workload) { image, source in
      try FaultyChain(image, source: source, format: VHDXDriver.self, cacheBudget: reads ? 0 : 32 << 20)
    }
    let full = scratch.file("full.vhdx")
    let reference = try crash.runWhole(
      pristine: pristine, at: full, initial: initial, kinds: [.write, .sync], minStages: 10)
    let content = reference.model.durable

    try FaultCampaign(crash).faultAtEach(
      reads ? .reads : .stages(reference.stages), pristine: pristine, initial: initial, reference: content,
      scratch: scratch,
      fileExtension: "vhdx"
    ) { image, model, context in
      // Replayed in memory (read-only), then into the file (read-write): clean, and complete.
      try FaultCampaign.expectHolds(image, model, format: nil, scratch: scratch, context)
      try openWritable(image).flush()
      let check = try Qemu.check(image, format: "vhdx")
      #expect(check.isClean, "\(context), after vdiskfs's replay: \(check)")
      try FaultCampaign.expectHolds(
        image, model, format: "vhdx", scratch: scratch, context + ", after the replay")
    } afterwards: { image, context in
      let check = try Qemu.check(image, format: "vhdx")
      #expect(check.isClean, "\(context): \(check)")
    }
  }

  @Test func eachReadFailing() throws {
    let scratch = try Scratch("vhdx-read-faults")
    defer { scratch.remove() }
    let image = scratch.file("r.vhdx")
    try Qemu.create(image, format: "vhdx", size: "8M", options: ["block_size=1M"])
    try Qemu.io(image, format: "vhdx", ["write -P 0x31 0 200k", "write -P 0x32 5M 64k"])
    let expected = try Qemu.rawContent(of: image, format: "vhdx", scratch: scratch)
    try expectEachReadFaultFailsOnlyThatRead(image, expected: expected) { image, source in
      try FaultyChain(image, source: source, format: VHDXDriver.self, writable: false)
    }
  }
}
