import Foundation
import TestSupport
import Testing
import VDI
import VDiskCore

/// A kill -9 after every single write-back stage in turn, on a dynamic vdi: a workload of
/// allocating writes (one block, two blocks in one write), overwrites in place and both kinds of
/// discard, with flushes between groups, is run once to count its stages S (every
/// `pwrite`/`pwritev`, `fdatasync` and `ftruncate` of the image file), then for every N in 0...S
/// on a fresh copy that stops writing after stage N. Each image left behind must pass
/// `qemu-img check` (a vdi has no leaks to allow: the count and the map must agree) and hold
/// every write a completed flush acknowledged, read through vdiskfs and through qemu.
@Suite struct VDICrashCampaignTests {
  enum Step {
    case write(Int, count: Int)
    case discard(Int, count: Int, DiscardMode)
    case flush
  }

  static let mib = 1 << 20

  /// Writes between two flushes never overlap (`DurabilityModel`'s rule).
  static let workload: [Step] = [
    // In place over qemu's block 0; a new block; one write allocating blocks 2 and 3.
    .write(100_000, count: 3000), .write(mib + 700, count: 40_000), .write(3 * mib - 100, count: 512), .flush,
    // In place; a new block at an odd offset; a hole punched in an allocated and in a free block.
    .write(1000, count: 10_000), .write(5 * mib + 300, count: 100_000),
    .discard(16384, count: 8192, .punchHole), .discard(6 * mib, count: mib, .punchHole), .flush,
    // Over the first group's blocks; a new last block; zeroes with unaligned edges.
    .write(mib + 10_000, count: 20_000), .write(7 * mib + 100_000, count: 65536),
    .discard(2 * mib + 50_001, count: 4600, .zeroRange), .flush,
  ]

  struct Outcome {
    var model: DurabilityModel
    var stages: [FaultInjectingSource.Stage]
    /// Whether an operation failed (the crash cut the workload short).
    var cut: Bool
  }

  /// Runs the workload on `image` until it ends or an operation fails.
  static func run(_ image: String, initial: [UInt8], cacheBudget: Int, crashAfter: Int?) -> Outcome {
    var model = DurabilityModel(initial)
    let disk: FaultyVDI
    do {
      disk = try FaultyVDI(image, cacheBudget: cacheBudget, crashAfter: crashAfter)
    } catch {
      return Outcome(model: model, stages: [], cut: true)
    }
    var serial: UInt64 = 0
    do {
      for step in workload {
        switch step {
        case .write(let offset, let count):
          serial += 1
          let bytes = pattern(count, serial: serial)
          model.attempt(bytes, at: offset)
          _ = try bytes.withUnsafeBytes { try disk.chain.write($0, at: UInt64(offset)) }
        case .discard(let offset, let count, let mode):
          model.attempt([UInt8](repeating: 0, count: count), at: offset)
          try disk.chain.discard(at: UInt64(offset), length: UInt64(count), mode: mode)
        case .flush:
          try disk.chain.flush()
          model.flushed()
        }
      }
    } catch {
      return Outcome(model: model, stages: disk.source.stages, cut: true)
    }
    return Outcome(model: model, stages: disk.source.stages, cut: false)
  }

  /// With a cache that holds every page, and with a budget below one page, where every
  /// allocating write writes the map back at once.
  @Test(arguments: [32 << 20, 64])
  func crashAfterEveryWritebackStage(cacheBudget: Int) throws {
    let scratch = try Scratch("vdi-crash")
    defer { scratch.remove() }
    let pristine = scratch.file("pristine.vdi")
    try Qemu.create(pristine, format: "vdi", size: "8M", options: ["static=off"])
    try Qemu.io(pristine, format: "vdi", ["write -P 0x11 0 64k"])
    let initial = try Qemu.rawContent(of: pristine, scratch: scratch)

    let full = scratch.file("full.vdi")
    try FileManager.default.copyItem(atPath: pristine, toPath: full)
    let reference = Self.run(full, initial: initial, cacheBudget: cacheBudget, crashAfter: nil)
    #expect(!reference.cut)
    let stages = reference.stages
    #expect(Set(stages.map(\.kind)).isSuperset(of: [.gatheringWrite, .write, .sync, .extend]), "\(stages)")
    #expect(stages.count >= 15, "\(stages)")
    let check = try VDICheck(full)
    #expect(check.isClean, "the whole workload: \(check)")
    #expect(reference.model.violation(in: try Qemu.rawContent(of: full, scratch: scratch)) == nil)
    // Blocks 0, 1, 2, 3, 5 and 7 are allocated; 6 (punched while free) is not.
    #expect(try u32LE(full, at: 0x184) == 6)

    for n in 0...stages.count {
      let context = n == 0 ? "crash before the first stage" : "crash after \(stages[n - 1])"
      let image = scratch.file("crash-\(n).vdi")
      try FileManager.default.copyItem(atPath: pristine, toPath: image)
      defer { try? FileManager.default.removeItem(atPath: image) }
      let outcome = Self.run(image, initial: initial, cacheBudget: cacheBudget, crashAfter: n)
      #expect(outcome.cut == (n < stages.count), "\(context)")
      #expect(outcome.stages.count == min(n, stages.count), "\(context)")

      let report = try VDICheck(image)
      #expect(report.isClean, "\(context): \(report)")
      let mounted = try readAll(try openChain(image))
      if let v = outcome.model.violation(in: mounted) { Issue.record("\(context), read by vdiskfs: \(v)") }
      let converted = try Qemu.rawContent(of: image, scratch: scratch)
      if let v = outcome.model.violation(in: converted) { Issue.record("\(context), read by qemu: \(v)") }
    }
  }
}
