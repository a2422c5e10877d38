import Foundation
import QCOW2
import TestSupport
import Testing
import VDiskCore

/// A kill -9 after every single write-back stage in turn: a workload of allocating writes (new
/// clusters, new L2 tables, a new refcount block), overwrites in place, writes spanning L2
/// tables and both kinds of discard, with flushes between groups, is run once to count its
/// stages S (every `pwrite`/`pwritev`, `fdatasync` and `ftruncate` of the image file), then for
/// every N in 0...S on a fresh copy that stops writing after stage N. Each image left behind must
/// pass `qemu-img check` (leaks allowed) and hold every write a completed flush acknowledged,
/// read both through vdiskfs and through `qemu-img convert`.
///
/// Written against `LayerChain`'s public write/discard/flush only, so it judges whatever write
/// engine sits behind them.
@Suite struct CrashCampaignTests {
  enum Step {
    case write(Int, count: Int)
    case discard(Int, count: Int, DiscardMode)
    case flush
  }

  /// 512-byte clusters: an L2 table covers 32 KiB of guest, a refcount block 128 KiB of host.
  /// Writes between two flushes never overlap (`DurabilityModel`'s rule).
  static let workload: [Step] = [
    // Allocations: new L2 tables, one write spanning two of them.
    .write(100_000, count: 3000), .write((1 << 20) + 700, count: 40_000), .write(3 << 20, count: 512), .flush,
    // In place over qemu's data; 200 new clusters (the first refcount block fills up); a hole.
    .write(1000, count: 10_000), .write((2 << 20) + 300, count: 100_000),
    .discard(16384, count: 8192, .punchHole), .flush,
    // Partly over the first group's clusters; another table; zeroes with unaligned edges.
    .write((1 << 20) + 10_000, count: 20_000), .write((3 << 20) + 100_000, count: 65536),
    .discard((2 << 20) + 50_001, count: 4600, .zeroRange), .flush,
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
    let disk: FaultyImage
    do {
      disk = try FaultyImage(image, cacheBudget: cacheBudget, crashAfter: crashAfter)
    } catch {
      return Outcome(model: model, stages: [], cut: true)  // crashed while opening
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

  /// With a cache that holds every table, and with one of four 512-byte tables, where dirty
  /// tables may have to be written back (in order) to make room.
  @Test(arguments: [32 << 20, 2048])
  func crashAfterEveryWritebackStage(cacheBudget: Int) throws {
    let scratch = try Scratch("crash-campaign")
    defer { scratch.remove() }
    let pristine = scratch.file("pristine.qcow2")
    try Qemu.create(pristine, size: "4M", options: ["cluster_size=512"])
    try Qemu.io(pristine, ["write -P 0x11 0 64k"])
    let initial = try Qemu.rawContent(of: pristine, scratch: scratch)

    // The whole workload once: its stages, and the image it leaves.
    let full = scratch.file("full.qcow2")
    try FileManager.default.copyItem(atPath: pristine, toPath: full)
    let reference = Self.run(full, initial: initial, cacheBudget: cacheBudget, crashAfter: nil)
    #expect(!reference.cut)
    let stages = reference.stages
    let kinds = Set(stages.map(\.kind))
    #expect(kinds.isSuperset(of: [.write, .sync]), "\(stages)")
    #expect(stages.count >= 20, "\(stages)")
    try expectNoCorruption(full, "the whole workload")
    #expect(try qemuCheck(full).leaks == 0)
    #expect(reference.model.violation(in: try Qemu.rawContent(of: full, scratch: scratch)) == nil)
    #expect(try field(full, at: 48, width: 8) != 0)

    // Then a crash after each stage (0: before the first).
    for n in Self.crashPoints(stages, limit: 150) {
      let context = n == 0 ? "crash before the first stage" : "crash after \(stages[n - 1])"
      let image = scratch.file("crash-\(n).qcow2")
      try FileManager.default.copyItem(atPath: pristine, toPath: image)
      defer { try? FileManager.default.removeItem(atPath: image) }
      let outcome = Self.run(image, initial: initial, cacheBudget: cacheBudget, crashAfter: n)
      #expect(outcome.cut == (n < stages.count), "\(context)")
      #expect(outcome.stages.count == min(n, stages.count), "\(context)")

      try expectNoCorruption(image, context)
      let mounted = try readAll(try openChain(image))
      if let v = outcome.model.violation(in: mounted) { Issue.record("\(context), read by vdiskfs: \(v)") }
      let converted = try Qemu.rawContent(of: image, scratch: scratch)
      if let v = outcome.model.violation(in: converted) { Issue.record("\(context), read by qemu: \(v)") }
    }
  }

  /// The sample of a long write-back keeps both sides of every sync and stays near the limit.
  @Test func longWritebacksAreSampled() {
    let stages = (1...400).map { n in
      FaultInjectingSource.Stage(number: n, kind: n % 50 == 0 ? .sync : .write, offset: 0, length: 512)
    }
    let points = Self.crashPoints(stages, limit: 100)
    #expect(points.count <= 110 && points.count >= 50, "\(points.count)")
    #expect(points.first == 0 && points.last == 400)
    for n in stride(from: 50, through: 400, by: 50) { #expect(points.contains(n - 1) && points.contains(n)) }
    #expect(Self.crashPoints(Array(stages.prefix(30)), limit: 100) == Array(0...30))
  }

  /// Every stage when there are at most `limit` (0: before the first); else a sample that
  /// keeps 0, the last stage, every stage next to a sync or a change of kind, and an even
  /// spread of the rest, so that a write-back with many more stages keeps the campaign short.
  static func crashPoints(_ stages: [FaultInjectingSource.Stage], limit: Int) -> [Int] {
    guard stages.count > limit else { return Array(0...stages.count) }
    var points: Set<Int> = [0, stages.count]
    for (i, stage) in stages.enumerated() {
      let n = i + 1
      let next = i + 1 < stages.count ? stages[i + 1].kind : nil
      if stage.kind != .write || next != stage.kind { points.formUnion([n - 1, n]) }
    }
    let stride = max(1, stages.count / max(1, limit - points.count))
    for n in Swift.stride(from: 0, through: stages.count, by: stride) { points.insert(n) }
    return points.sorted()
  }
}
