import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore
import VHD

/// A kill -9 after every single write-back stage in turn (every `pwrite`/`pwritev` and
/// `fdatasync` of the image file, `FaultInjectingSource`), for a dynamic disk and for a
/// differencing one: a workload of allocating writes (new blocks, one write spanning two
/// blocks), overwrites in place, writes setting bitmap bits of allocated blocks and both kinds of
/// discard, with flushes between groups, is run once to count its stages S, then for every N in
/// 0...S on a fresh copy that stops writing after stage N. Each image left behind must have a
/// valid footer at its end (and the copy at 0), BAT entries naming whole blocks before that
/// footer, open in qemu (`qemu-img convert`), and hold every write a completed flush
/// acknowledged, read through vdiskfs (and through qemu for the dynamic disk).
@Suite struct VHDCrashCampaignTests {
  enum Step {
    case write(Int, count: Int)
    case discard(Int, count: Int, DiscardMode)
    case flush
  }

  /// 8 MiB dynamic disk, 2 MiB blocks, qemu data in block 0. Writes between two flushes never
  /// overlap (`DurabilityModel`'s rule).
  static let dynamicWorkload: [Step] = [
    .write(100_000, count: 3000), .write((2 << 20) + 700, count: 40_000),
    .write((4 << 20) - 1000, count: 3000),
    .flush,
    .write(1000, count: 10_000), .write((6 << 20) + 300, count: 100_000),
    .discard(16384, count: 8192, .punchHole),
    .discard(5 << 20, count: 4096, .zeroRange), .flush,
    .write((2 << 20) + 50_000, count: 20_000), .write((6 << 20) + 200_000, count: 65536),
    .discard((4 << 20) + 50_001, count: 4600, .zeroRange), .flush,
  ]

  /// The 4 MiB differencing disk of `VHDDifferencingTests.makePair` (512 KiB blocks; block 1 has
  /// sectors 0-7 and 100-227, block 3 all of them): new blocks with partial sectors filled from
  /// the parent, bits set in block 1, in place in block 3, zeros over the parent.
  static let differencingWorkload: [Step] = [
    .write(100_000, count: 3000), .write((512 << 10) + 4096 + 100, count: 1000),
    .write((3 << 19) + 7, count: 5000),
    .flush,
    .write((1 << 20) + 300, count: 100_000), .discard(200_000, count: 8192, .punchHole),
    .write((2 << 20) + 1, count: 511), .flush,
    .write((512 << 10) + 50 * 512 + 3, count: 20_000), .discard((3 << 20) + 50_001, count: 4600, .zeroRange),
    .write(100_500, count: 1000), .flush,
  ]

  struct Outcome {
    var model: DurabilityModel
    var stages: [FaultInjectingSource.Stage]
    var cut: Bool
  }

  static func run(
    _ workload: [Step], image: String, parent: String?, initial: [UInt8], cacheBudget: Int, crashAfter: Int?
  ) -> Outcome {
    var model = DurabilityModel(initial)
    let disk: FaultyVHD
    do {
      disk = try FaultyVHD(image, parent: parent, cacheBudget: cacheBudget, crashAfter: crashAfter)
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

  /// With a cache that holds everything, and with a 1-byte budget, where every commit writes
  /// its dirty BAT pages and bitmaps back at once (cache pressure).
  @Test(arguments: [false, true], [32 << 20, 1])
  func crashAfterEveryWritebackStage(differencing: Bool, cacheBudget: Int) throws {
    let scratch = try Scratch("vpc-crash")
    defer { scratch.remove() }
    let pristine: String
    var parent: String?
    let workload: [Step]
    if differencing {
      let pair = try VHDDifferencingTests.makePair(in: scratch, childName: "pristine.vhd")
      pristine = pair.child
      parent = pair.parent
      workload = Self.differencingWorkload
    } else {
      pristine = scratch.file("pristine.vhd")
      try Qemu.create(pristine, format: "vpc", size: "8M", options: ["force_size=on"])
      try Qemu.io(pristine, format: "vpc", ["write -P 0x11 0 64k", "write -P 0x12 4M 4096"])
      workload = Self.dynamicWorkload
    }
    let parentSum = try parent.map(checksum)
    let initial = try readAll(openChain(pristine))

    let full = scratch.file("full.vhd")
    try FileManager.default.copyItem(atPath: pristine, toPath: full)
    let reference = Self.run(
      workload, image: full, parent: parent, initial: initial, cacheBudget: cacheBudget, crashAfter: nil)
    #expect(!reference.cut)
    let stages = reference.stages
    #expect(Set(stages.map(\.kind)).isSuperset(of: [.sync]), "\(stages)")
    #expect(stages.count >= 20, "\(stages)")
    try expectSound(
      full, model: reference.model, checkQemuContent: !differencing, "the whole workload", scratch)
    #expect(reference.model.violation(in: try readAll(openChain(full))) == nil)

    for n in 0...stages.count {
      let context = n == 0 ? "crash before the first stage" : "crash after \(stages[n - 1])"
      let image = scratch.file("crash-\(n).vhd")
      try FileManager.default.copyItem(atPath: pristine, toPath: image)
      defer { try? FileManager.default.removeItem(atPath: image) }
      let outcome = Self.run(
        workload, image: image, parent: parent, initial: initial, cacheBudget: cacheBudget, crashAfter: n)
      #expect(outcome.cut == (n < stages.count), "\(context)")
      #expect(outcome.stages.count == min(n, stages.count), "\(context)")
      try expectSound(image, model: outcome.model, checkQemuContent: !differencing, context, scratch)
    }
    if let parent { #expect(try checksum(parent) == parentSum, "the parent changed") }
  }

  /// The layout is sound, qemu opens the image, and the content keeps every acknowledged write.
  func expectSound(
    _ image: String, model: DurabilityModel, checkQemuContent: Bool, _ context: String, _ scratch: Scratch
  ) throws {
    let layout = try VHDLayoutCheck(image, virtualSize: UInt64(model.durable.count))
    #expect(layout.problems.isEmpty, "\(context): \(layout.problems)")
    let converted = try Qemu.rawContent(of: image, format: "vpc", scratch: scratch)
    if checkQemuContent, let v = model.violation(in: converted) {
      Issue.record("\(context), read by qemu: \(v)")
    }
    if let v = model.violation(in: try readAll(openChain(image))) {
      Issue.record("\(context), read by vdiskfs: \(v)")
    }
  }
}
