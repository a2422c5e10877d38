import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore

@testable import VHDX

/// A kill -9 after every single write stage in turn (every `pwrite`, `fdatasync` and
/// `ftruncate` of the image file, opening included): a workload of allocating writes, writes in
/// place, a whole-block discard and a partial zero-range, with flushes between groups, is run once
/// to count its stages S, then for every N in 0...S on a fresh copy that stops after stage N.
/// Each image left behind must replay (vdiskfs in memory; vdiskfs writing it into the file on a
/// read-write open; `qemu-img check -r all` on a copy) to an image `qemu-img check` finds clean
/// that holds every write a completed flush acknowledged.
@Suite struct VHDXCrashCampaignTests {
  /// 1 MiB blocks over an 8 MiB disk whose first 2 MiB qemu wrote. Writes between two flushes
  /// never overlap.
  static let workload: [CrashCampaign.Step] = [
    // New blocks (one write spanning two), one in place over qemu's data.
    .write(100_000, count: 3000), .write((3 << 20) - 700, count: 40_000), .write(5 << 20, count: 512),
    .write((1 << 20) + 4096, count: 8192), .flush,
    // In place; a new block at the end; a whole-block hole over qemu's first block.
    .write((1 << 20) + 200_000, count: 10_000), .write((7 << 20) + 300, count: 100_000),
    .discard(0, count: 1 << 20, .punchHole), .flush,
    // Over the first group's blocks; a zeroed range with unaligned edges; a whole new block.
    .write((3 << 20) + 10_000, count: 20_000), .discard((5 << 20) + 1000, count: 70_001, .zeroRange),
    .write(6 << 20, count: 1 << 20), .flush,
  ]

  /// With a cache that holds every table, and with none (every commit writes back).
  @Test(arguments: [32 << 20, 0])
  func crashAfterEveryStage(cacheBudget: Int) throws {
    let scratch = try Scratch("vhdx-crash")
    defer { scratch.remove() }
    let pristine = scratch.file("pristine.vhdx")
    try Qemu.create(pristine, format: "vhdx", size: "8M", options: ["block_size=1M"])
    try Qemu.io(pristine, format: "vhdx", ["write -P 0x11 0 2M"])
    let initial = try Qemu.rawContent(of: pristine, scratch: scratch)

    let campaign = CrashCampaign(workload: Self.workload) { image, source in
      try FaultyChain(image, source: source, format: VHDXDriver.self, cacheBudget: cacheBudget)
    }

    let full = scratch.file("full.vhdx")
    let reference = try campaign.runWhole(
      pristine: pristine, at: full, initial: initial, kinds: [.write, .sync, .setSize], minStages: 25)
    let stages = reference.stages
    #expect(try Qemu.check(full, format: "vhdx").isClean)
    #expect(reference.model.violation(in: try Qemu.rawContent(of: full, scratch: scratch)) == nil)

    var pendingLogs = 0
    try campaign.crashAtEachStage(
      stages, pristine: pristine, initial: initial, scratch: scratch, fileExtension: "vhdx"
    ) { image, outcome, context in
      if try #require(try openChain(image).top as? VHDXLayer).replayedLogEntries > 0 { pendingLogs += 1 }
      try Self.expectRecovers(image, outcome.model, context: context, scratch: scratch)
    }
    // Some crash points fall between a log entry and its application: replay was exercised.
    #expect(pendingLogs >= 3, "\(pendingLogs) crash points left a log to replay")
  }

  /// The image after a crash, read three ways, holds what `model` allows.
  static func expectRecovers(_ image: String, _ model: DurabilityModel, context: String, scratch: Scratch)
    throws
  {
    // vdiskfs, read-only: the log replayed in memory, the file untouched.
    let before = try fileChecksum(image)
    if let v = model.violation(in: try readAll(try openChain(image))) {
      Issue.record("\(context), read by vdiskfs: \(v)")
    }
    #expect(try fileChecksum(image) == before, "\(context): a read-only open changed the file")

    // qemu on a copy: replay with check -r all, then clean.
    let copy = scratch.file("copy.vhdx")
    try? FileManager.default.removeItem(atPath: copy)
    try FileManager.default.copyItem(atPath: image, toPath: copy)
    defer { try? FileManager.default.removeItem(atPath: copy) }
    let repaired = try Qemu.check(copy, format: "vhdx", repair: true)
    #expect(repaired.status == 0, "\(context): \(repaired)")
    let after = try Qemu.check(copy, format: "vhdx")
    #expect(after.isClean, "\(context), after qemu's replay: \(after)")
    if let v = model.violation(in: try Qemu.rawContent(of: copy, format: "vhdx", scratch: scratch)) {
      Issue.record("\(context), read by qemu: \(v)")
    }

    // vdiskfs, read-write: the log replayed into the file; qemu then needs no replay.
    do {
      let chain = try openWritable(image)
      try chain.flush()
    }
    let check = try Qemu.check(image, format: "vhdx")
    #expect(check.isClean, "\(context), after vdiskfs's replay: \(check)")
    if let v = model.violation(in: try Qemu.rawContent(of: image, format: "vhdx", scratch: scratch)) {
      Issue.record("\(context), after vdiskfs's replay, read by qemu: \(v)")
    }
  }

  /// An I/O error on a guest data write reaches the writer, and what was flushed before stays.
  @Test func dataWriteErrorReachesTheWriter() throws {
    let scratch = try Scratch("vhdx-eio")
    defer { scratch.remove() }
    let image = scratch.file("disk.vhdx")
    try Qemu.create(image, format: "vhdx", size: "8M", options: ["block_size=1M"])
    var expected = try Qemu.rawContent(of: image, scratch: scratch)
    do {
      let disk = try FaultyChain(image, format: VHDXDriver.self)
      let first = pattern(5000, serial: 1)
      _ = try first.withUnsafeBytes { try disk.chain.write($0, at: 3000) }
      try disk.chain.flush()
      expected.replaceSubrange(3000..<8000, with: first)
      // The block at 4 MiB is new: its data goes past 4 MiB of the file.
      disk.source.failWrites(overlapping: (2 << 20)..<UInt64.max, count: 1)
      let second = pattern(4096, serial: 2)
      #expect(throws: VDiskError.self) {
        _ = try second.withUnsafeBytes { try disk.chain.write($0, at: 4 << 20) }
      }
      try disk.chain.flush()
      #expect(firstDifference(try readAll(disk.chain), expected) == nil)
    }
    #expect(try Qemu.check(image, format: "vhdx").isClean)
    #expect(firstDifference(try Qemu.rawContent(of: image, scratch: scratch), expected) == nil)
  }
}
