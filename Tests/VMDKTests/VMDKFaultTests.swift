import Foundation
import TestSupport
import Testing
import VDiskCore
import VMDK

/// EIO and ENOSPC from a monolithicSparse extent at every write-back stage (the CID update, the
/// dirty byte, grains, tables, both directories, syncs), and EIO on every read
/// (`FaultCampaign`, `expectEachReadFaultFailsOnlyThatRead`): the error reaches the caller with
/// its errno, `qemu-img check` stays clean with every flushed write, and the same chain goes on
/// working. (streamOptimized, seSparse and COWD extents are read-only in vdiskfs: nothing to
/// fail.)
@Suite struct VMDKFaultTests {
  static let mib = 1 << 20
  /// Over `pristine` (64 KiB grains; no grain table at first).
  static let workload: [CrashCampaign.Step] = [
    // The table and a new grain; new grains (with fill) across three grains.
    .write(100_000, count: 3000), .write(mib + 700, count: 140_000), .flush,
    // In place in a new grain; a zeroed-grain discard of one; a partial zero range.
    .write(101_000, count: 1000), .discard(mib + 65536, count: 65536, .punchHole),
    .discard(mib + 1000, count: 3000, .zeroRange), .flush,
  ]

  /// 8 MiB (one grain table's reach), zeroed grains allowed, the grain table emptied from both
  /// directories (leaked, as after qemu wrote and another tool trimmed): writing creates it.
  /// A 40 MiB image with qemu's data and a table to create (`VMDKCrashCampaignTests`) would do
  /// the same with five times the bytes to read after every fault.
  static func pristine(_ path: String, scratch: Scratch) throws -> [UInt8] {
    try Qemu.create(path, format: "vmdk", size: "8M", options: ["zeroed_grain=on"])
    try SparseHeaderFields(path).emptyDirectoryEntries(path, [0])
    return try Qemu.rawContent(of: path, scratch: scratch)
  }

  /// (No campaign of reads while writing: this workload reads nothing from the extent after
  /// opening, even with no cache, as the grain tables stay resident once read.)
  @Test func eachWritebackStageFailing() throws { try campaign(reads: false) }

  /// The fault campaign over `workload`: at its write-back stages, or at its reads.
  func campaign(reads: Bool) throws {
    let scratch = try Scratch("vmdk-stage-faults")
    defer { scratch.remove() }
    let pristine = scratch.file("pristine.vmdk")
    try FaultCampaign.qemuJudged(
      Self.workload, driver: VMDKDriver.self, format: "vmdk", pristine: pristine,
      initial: try Self.pristine(pristine, scratch: scratch), reads: reads, readsCacheBudget: 0,
      minStages: 10,
      leaksAllowed: false, scratch: scratch)
  }

  @Test func eachReadFailing() throws {
    let scratch = try Scratch("vmdk-read-faults")
    defer { scratch.remove() }
    let image = scratch.file("r.vmdk")
    try Qemu.create(image, format: "vmdk", size: "8M", options: ["zeroed_grain=on"])
    try Qemu.io(image, format: "vmdk", ["write -P 0x31 0 200k", "write -P 0x32 5M 64k", "write -z 64k 64k"])
    let expected = try Qemu.rawContent(of: image, scratch: scratch)
    try expectEachReadFaultFailsOnlyThatRead(image, expected: expected) { image, source in
      try FaultyChain(image, source: source, format: VMDKDriver.self, writable: false)
    }
  }
}
