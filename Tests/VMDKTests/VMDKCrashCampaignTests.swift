import Foundation
import SystemPackage
import TestSupport
import Testing
import VDiskCore
import VMDK

/// A kill -9 after every single write stage in turn, on a monolithicSparse vmdk: a workload of
/// allocating writes (new grains, a new grain table where the directory has none), overwrites in
/// place, zeroed-grain discards and partial zero ranges, with flushes between groups, is run once
/// to count its stages S (every `pwrite`/`pwritev` and `fdatasync` of the image: the CID update,
/// the dirty byte, grains, tables, directories), then for every N in 0...S on a fresh copy that
/// stops writing after stage N. Each image left behind must pass `qemu-img check` and hold every
/// write a completed flush acknowledged, read both through vdiskfs and through `qemu-img
/// convert`.
@Suite struct VMDKCrashCampaignTests {
  static let mib = 1 << 20
  /// 64 KiB grains, 32 MiB per grain table; the table of 32…40 MiB does not exist at first.
  /// Writes between two flushes never overlap (`DurabilityModel`'s rule).
  static let workload: [CrashCampaign.Step] = [
    // In place in qemu's grains; new grains (with fill) across several grains; a new table.
    .write(100_000, count: 3000), .write(mib + 700, count: 140_000), .write(33 * mib + 5, count: 512), .flush,
    // In place; new grains; zeroed-grain discards of new and of qemu's grains.
    .write(1000, count: 10_000), .write(2 * mib + 300, count: 300_000),
    .discard(3 * mib, count: 131_072, .punchHole), .discard(131_072, count: 65536, .punchHole), .flush,
    // Partly over the first group's grains; a whole grain in the new table; a partial zero range.
    .write(mib + 150_000, count: 20_000), .write(34 * mib, count: 65536),
    .discard(2 * mib + 50_001, count: 4600, .zeroRange), .flush,
  ]

  /// The pristine image: 40 MiB, zeroed grains allowed, qemu data in the first 256 KiB, and no
  /// grain table for 32…40 MiB (as images from other tools may have).
  static func pristine(_ path: String, scratch: Scratch) throws -> [UInt8] {
    try Qemu.create(path, format: "vmdk", size: "40M", options: ["zeroed_grain=on"])
    try Qemu.io(path, format: "vmdk", ["write -P 0x11 0 256k"])
    try SparseHeaderFields(path).emptyDirectoryEntries(path, [1])
    return try Qemu.rawContent(of: path, scratch: scratch)
  }

  /// With a cache that holds every table, and with room for one table only (dirty tables are
  /// written back to make room).
  @Test(arguments: [32 << 20, 4096])
  func crashAfterEveryStage(cacheBudget: Int) throws {
    let scratch = try Scratch("vmdk-crash")
    defer { scratch.remove() }
    let pristine = scratch.file("pristine.vmdk")
    let initial = try Self.pristine(pristine, scratch: scratch)

    let campaign = CrashCampaign(workload: Self.workload) { image, source in
      try FaultyChain(image, source: source, format: VMDKDriver.self, cacheBudget: cacheBudget)
    }

    let full = scratch.file("full.vmdk")
    let reference = try campaign.runWhole(
      pristine: pristine, at: full, initial: initial, kinds: [.write, .sync], minStages: 20)
    let stages = reference.stages
    try Qemu.expectCheck(full, format: "vmdk", "the whole workload")
    #expect(reference.model.violation(in: try Qemu.rawContent(of: full, scratch: scratch)) == nil)
    // The new table is linked in both directories, and the clean close cleared the dirty byte.
    let fields = try SparseHeaderFields(full)
    #expect(try fields.directory(full)[1] != 0)
    #expect(try fields.directory(full, redundant: true)[1] != 0)
    #expect(fields.dirtyByte == 0)

    try campaign.crashAtEachStage(
      stages, pristine: pristine, initial: initial, scratch: scratch, fileExtension: "vmdk"
    ) { image, outcome, context in
      try Qemu.expectCheck(image, format: "vmdk", context)
      try CrashCampaign.expectDurable(image, outcome.model, scratch: scratch, context)
    }
  }

  /// A data write failing with EIO (a new grain, then a grain written in place): the writer gets
  /// `.io`, the range keeps its old bytes, later writes work, and after reopening every flushed
  /// write is there and `qemu-img check` is clean.
  @Test func aFailedDataWriteLosesNothingAcknowledged() throws {
    let scratch = try Scratch("vmdk-eio")
    defer { scratch.remove() }
    let image = scratch.file("w.vmdk")
    let initial = try Self.pristine(image, scratch: scratch)
    var model = DurabilityModel(initial)
    do {
      let disk = try FaultyChain(image, format: VMDKDriver.self)
      func write(_ byte: UInt8, at offset: Int, count: Int) throws {
        let bytes = [UInt8](repeating: byte, count: count)
        _ = try bytes.withUnsafeBytes { try disk.chain.write($0, at: UInt64(offset)) }
        model.attempt(bytes, at: offset)
      }
      try write(0x21, at: 5 * Self.mib, count: 70_000)
      try disk.chain.flush()
      model.flushed()

      // A new grain: it would go at the end of the file.
      let end = try FileDescriptorSource.open(image, writable: false).size()
      disk.source.failWrites(overlapping: end..<UInt64.max, count: 1, with: .ioError)
      expectVDiskError(.io, ["failed"]) {
        _ = try [UInt8](repeating: 0x22, count: 4096).withUnsafeBytes {
          try disk.chain.write($0, at: 7 << 20)
        }
      }
      #expect(try disk.chain.read(at: 7 << 20, count: 4096) == [UInt8](repeating: 0, count: 4096))
      // A grain written in place (qemu's data at 0).
      guard case .data(let host) = try disk.chain.top.extent(at: 0, maxLength: 1).mapping else {
        Issue.record("guest 0 is not stored data")
        return
      }
      disk.source.failWrites(overlapping: host..<host + 1, count: 1, with: .ioError)
      expectVDiskError(.io, ["failed"]) {
        _ = try [UInt8](repeating: 0x23, count: 512).withUnsafeBytes { try disk.chain.write($0, at: 0) }
      }
      #expect(try disk.chain.read(at: 0, count: 512) == Array(initial[0..<512]))
      try write(0x24, at: 9 * Self.mib, count: 100_000)
      try disk.chain.flush()
      model.flushed()
    }
    try Qemu.expectCheck(image, format: "vmdk", "after failed writes")
    #expect(model.violation(in: try readAll(try openChain(image))) == nil)
    #expect(model.violation(in: try Qemu.rawContent(of: image, scratch: scratch)) == nil)
  }
}
