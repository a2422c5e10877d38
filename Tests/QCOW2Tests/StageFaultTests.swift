import Foundation
import QCOW2
import SystemPackage
import TestSupport
import Testing
import VDiskCore

/// EIO and ENOSPC from the image file at every write-back stage, and EIO on every read, of a
/// qcow2 (`FaultCampaign`, `expectEachReadFaultFailsOnlyThatRead`): the error reaches the caller
/// with its errno, the image stays check-clean (leaks allowed) with every flushed write, and the
/// same chain goes on working once the fault is gone.
@Suite struct StageFaultTests {
  /// 4 KiB clusters (an L2 table covers 2 MiB). Writes between two flushes never overlap.
  static let workload: [CrashCampaign.Step] = [
    // New clusters beside qemu's; in place over qemu's data; a new L2 table.
    .write(100_000, count: 3000), .write(1000, count: 2000), .write((3 << 20) + 5, count: 5000), .flush,
    // A hole in qemu's data; clusters of the first group, partly; zeros with unaligned edges.
    .discard(16384, count: 8192, .punchHole), .write(102_000, count: 4000),
    .discard((3 << 20) + 6000, count: 9000, .zeroRange), .flush,
  ]

  static func pristine(_ path: String, scratch: Scratch) throws -> [UInt8] {
    try Qemu.create(path, size: "4M", options: ["cluster_size=4096"])
    try Qemu.io(path, ["write -P 0x11 0 64k"])
    return try Qemu.rawContent(of: path, scratch: scratch)
  }

  @Test func eachWritebackStageFailing() throws { try campaign(reads: false) }

  /// EIO on the reads the workload makes while writing, with a cache too small for every table.
  @Test func eachReadWhileWritingFailing() throws { try campaign(reads: true) }

  /// The fault campaign over `workload`: at its write-back stages, or at its reads.
  func campaign(reads: Bool) throws {
    let scratch = try Scratch("qcow2-stage-faults")
    defer { scratch.remove() }
    let pristine = scratch.file("pristine.qcow2")
    try FaultCampaign.qemuJudged(
      Self.workload, driver: QCOW2Driver.self, format: "qcow2", pristine: pristine,
      initial: try Self.pristine(pristine, scratch: scratch), reads: reads, readsCacheBudget: 2048,
      minStages: 10,
      scratch: scratch)
  }

  /// Every read of opening and reading a written image in turn.
  @Test func eachReadFailing() throws {
    let scratch = try Scratch("qcow2-read-faults")
    defer { scratch.remove() }
    let image = scratch.file("r.qcow2")
    try Qemu.create(image, size: "4M", options: ["cluster_size=4096"])
    try Qemu.io(image, ["write -P 0x31 0 100k", "write -P 0x32 3M 64k", "write -z 8k 4k"])
    let expected = try Qemu.rawContent(of: image, scratch: scratch)
    try expectEachReadFaultFailsOnlyThatRead(image, expected: expected) { image, source in
      try FaultyChain(image, source: source, format: QCOW2Driver.self, writable: false)
    }
  }
}
