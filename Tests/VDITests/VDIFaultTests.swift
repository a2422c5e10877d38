import Foundation
import TestSupport
import Testing
import VDI
import VDiskCore

/// EIO and ENOSPC from a dynamic vdi at every write-back stage (blocks, the block map, the
/// header's count, syncs), and EIO on every read (`FaultCampaign`,
/// `expectEachReadFaultFailsOnlyThatRead`): the error reaches the caller with its errno,
/// `qemu-img check` stays clean with every flushed write, and the same chain goes on working.
@Suite struct VDIFaultTests {
  static let mib = 1 << 20
  /// 1 MiB blocks over 8 MiB, qemu data in block 0. Writes between two flushes never overlap.
  static let workload: [CrashCampaign.Step] = [
    // In place over qemu's block 0; a new block; one write allocating blocks 2 and 3.
    .write(100_000, count: 3000), .write(mib + 700, count: 40_000), .write(3 * mib - 100, count: 512), .flush,
    // A hole punched in an allocated block; in place in a new block; zeros with unaligned edges.
    .discard(16384, count: 8192, .punchHole), .write(mib + 50_000, count: 4000),
    .discard(2 * mib + 50_001, count: 4600, .zeroRange), .flush,
  ]

  @Test func eachWritebackStageFailing() throws { try campaign(reads: false) }

  /// EIO on the reads the workload makes while writing, with a cache too small for every table.
  @Test func eachReadWhileWritingFailing() throws { try campaign(reads: true) }

  /// The fault campaign over `workload`: at its write-back stages, or at its reads.
  func campaign(reads: Bool) throws {
    let scratch = try Scratch("vdi-stage-faults")
    defer { scratch.remove() }
    let pristine = scratch.file("pristine.vdi")
    try Qemu.create(pristine, format: "vdi", size: "8M", options: ["static=off"])
    try Qemu.io(pristine, format: "vdi", ["write -P 0x11 0 64k"])
    try FaultCampaign.qemuJudged(
      Self.workload, driver: VDIDriver.self, format: "vdi", pristine: pristine,
      initial: try Qemu.rawContent(of: pristine, scratch: scratch), reads: reads, readsCacheBudget: 64,
      minStages: 8, scratch: scratch)
  }

  @Test func eachReadFailing() throws {
    let scratch = try Scratch("vdi-read-faults")
    defer { scratch.remove() }
    let image = scratch.file("r.vdi")
    try Qemu.create(image, format: "vdi", size: "8M", options: ["static=off"])
    try Qemu.io(image, format: "vdi", ["write -P 0x31 0 200k", "write -P 0x32 5M 64k"])
    let expected = try Qemu.rawContent(of: image, scratch: scratch)
    try expectEachReadFaultFailsOnlyThatRead(image, expected: expected) { image, source in
      try FaultyChain(image, source: source, format: VDIDriver.self, writable: false)
    }
  }
}
