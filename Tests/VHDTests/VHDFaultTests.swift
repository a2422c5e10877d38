import Foundation
import TestSupport
import Testing
import VDiskCore
import VHD

/// EIO and ENOSPC from a dynamic VHD at every write-back stage (blocks with their bitmaps, BAT
/// pages, the footer moved past a new block, syncs), and EIO on every read (`FaultCampaign`,
/// `expectEachReadFaultFailsOnlyThatRead`): the error reaches the caller with its errno, the
/// layout stays sound (`VHDLayoutCheck`; qemu-img check does not know vpc) with every flushed
/// write, and the same chain goes on working.
@Suite struct VHDFaultTests {
  /// 8 MiB dynamic disk, 2 MiB blocks, qemu data in blocks 0 and 2.
  static let workload: [CrashCampaign.Step] = [
    // In place; a new block; one write spanning blocks 1 and 2.
    .write(100_000, count: 3000), .write((6 << 20) + 300, count: 40_000),
    .write((4 << 20) - 1000, count: 3000), .flush,
    // A hole in block 0; in place in the new block; zeros with unaligned edges.
    .discard(16384, count: 8192, .punchHole), .write((6 << 20) + 50_000, count: 4000),
    .discard((4 << 20) + 50_001, count: 4600, .zeroRange), .flush,
  ]

  @Test func eachWritebackStageFailing() throws { try campaign(reads: false) }

  /// EIO on the reads the workload makes while writing, with a cache too small for every table.
  @Test func eachReadWhileWritingFailing() throws { try campaign(reads: true) }

  /// The fault campaign over `workload`: at its write-back stages, or at its reads.
  func campaign(reads: Bool) throws {
    let scratch = try Scratch("vpc-stage-faults")
    defer { scratch.remove() }
    let pristine = scratch.file("pristine.vhd")
    try Qemu.create(pristine, format: "vpc", size: "8M", options: ["force_size=on"])
    try Qemu.io(pristine, format: "vpc", ["write -P 0x11 0 64k", "write -P 0x12 4M 4096"])
    let initial = try readAll(openChain(pristine))
    let crash = CrashCampaign(workload: Self.workload) { image, source in
      try FaultyChain(image, source: source, format: VHDDriver.self, cacheBudget: reads ? 1 : 32 << 20)
    }
    let full = scratch.file("full.vhd")
    let reference = try crash.runWhole(
      pristine: pristine, at: full, initial: initial, kinds: [.write, .sync], minStages: 8)
    let content = reference.model.durable
    let judge = VHDCrashCampaignTests()

    try FaultCampaign(crash).faultAtEach(
      reads ? .reads : .stages(reference.stages), pristine: pristine, initial: initial, reference: content,
      scratch: scratch,
      fileExtension: "vhd"
    ) { image, model, context in
      try judge.expectSound(image, model: model, checkQemuContent: true, context, scratch)
    } afterwards: { image, context in
      let layout = try VHDLayoutCheck(image, virtualSize: UInt64(content.count))
      #expect(layout.problems.isEmpty, "\(context): \(layout.problems)")
      let same = FaultCampaign.identical(
        try Qemu.rawContent(of: image, format: "vpc", scratch: scratch), content)
      #expect(same, "\(context): qemu reads other bytes")
    }
  }

  @Test func eachReadFailing() throws {
    let scratch = try Scratch("vpc-read-faults")
    defer { scratch.remove() }
    let image = scratch.file("r.vhd")
    try Qemu.create(image, format: "vpc", size: "8M", options: ["force_size=on"])
    try Qemu.io(image, format: "vpc", ["write -P 0x31 0 200k", "write -P 0x32 5M 64k"])
    let expected = try Qemu.rawContent(of: image, format: "vpc", scratch: scratch)
    try expectEachReadFaultFailsOnlyThatRead(image, expected: expected) { image, source in
      try FaultyChain(image, source: source, format: VHDDriver.self, writable: false)
    }
  }
}
