import Foundation
import Testing
import VDiskCore

/// A kill -9 after every single write-back stage in turn: a workload of writes, discards and
/// flushes is run once on a copy of a pristine image to count its stages S (every write, sync
/// and size change that reaches the image file, `FaultInjectingSource`), then for every crash
/// point N (0...S, or a sample of it) on a fresh copy that stops writing after stage N. The
/// format's test judges each image left behind; `expectDurable` is the judgment every format
/// shares: every write a completed flush acknowledged is there.
///
/// Written against `LayerChain`'s public write/discard/flush only, so it judges whatever write
/// engine sits behind them.
public struct CrashCampaign {
  public enum Step: Sendable {
    case write(Int, count: Int)
    case discard(Int, count: Int, DiscardMode)
    case flush
  }

  public struct Outcome {
    public var model: DurabilityModel
    public var stages: [FaultInjectingSource.Stage]
    /// Whether an operation failed (the crash cut the workload short).
    public var cut: Bool
  }

  /// Writes between two flushes never overlap (`DurabilityModel`'s rule).
  public var workload: [Step]
  /// Opens an image for writing over `source` (`FaultyChain(_:source:format:…)`), a faulty
  /// source over the image armed to crash at the crash point.
  public var open: (_ image: String, _ source: FaultInjectingSource) throws -> FaultyChain

  public init(
    workload: [Step], open: @escaping (_ image: String, _ source: FaultInjectingSource) throws -> FaultyChain
  ) {
    self.workload = workload
    self.open = open
  }

  /// Runs the workload on `image` until it ends or an operation fails. Write number k writes
  /// `pattern(count, serial: k)`.
  public func run(_ image: String, initial: [UInt8], crashAfter: Int?) -> Outcome {
    var model = DurabilityModel(initial)
    let source: FaultInjectingSource
    let disk: FaultyChain
    do {
      source = FaultInjectingSource(wrapping: try FileDescriptorSource.open(image, writable: true))
    } catch {
      return Outcome(model: model, stages: [], cut: true)
    }
    if let crashAfter { source.crash(afterStage: crashAfter) }
    do {
      disk = try open(image, source)
    } catch {
      return Outcome(model: model, stages: source.stages, cut: true)  // crashed while opening
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

  /// The whole workload, uncut, on a copy of `pristine` at `image`: it must complete, its stages
  /// must include every kind in `kinds` and number at least `minStages`.
  public func runWhole(
    pristine: String, at image: String, initial: [UInt8], kinds: Set<FaultInjectingSource.StageKind>,
    minStages: Int, sourceLocation: SourceLocation = #_sourceLocation
  ) throws -> Outcome {
    try FileManager.default.copyItem(atPath: pristine, toPath: image)
    let outcome = run(image, initial: initial, crashAfter: nil)
    #expect(!outcome.cut, sourceLocation: sourceLocation)
    let stages = outcome.stages
    #expect(Set(stages.map(\.kind)).isSuperset(of: kinds), "\(stages)", sourceLocation: sourceLocation)
    #expect(stages.count >= minStages, "\(stages)", sourceLocation: sourceLocation)
    return outcome
  }

  /// For each crash point N of `points` (default: every one, 0...stages.count): a fresh copy of
  /// `pristine` in `scratch` (named crash-N.`fileExtension`, removed afterwards) runs the
  /// workload until stage N. The run must be cut exactly when N < S, after exactly min(N, S)
  /// stages; then `judge` gets the image, the outcome and a description of the crash point.
  public func crashAtEachStage(
    _ stages: [FaultInjectingSource.Stage], points: [Int]? = nil, pristine: String, initial: [UInt8],
    scratch: Scratch, fileExtension: String, sourceLocation: SourceLocation = #_sourceLocation,
    judge: (_ image: String, _ outcome: Outcome, _ context: String) throws -> Void
  ) throws {
    for n in points ?? Array(0...stages.count) {
      let context = n == 0 ? "crash before the first stage" : "crash after \(stages[n - 1])"
      let image = scratch.file("crash-\(n).\(fileExtension)")
      try FileManager.default.copyItem(atPath: pristine, toPath: image)
      defer { try? FileManager.default.removeItem(atPath: image) }
      let outcome = run(image, initial: initial, crashAfter: n)
      #expect(outcome.cut == (n < stages.count), "\(context)", sourceLocation: sourceLocation)
      #expect(outcome.stages.count == min(n, stages.count), "\(context)", sourceLocation: sourceLocation)
      try judge(image, outcome, context)
    }
  }

  /// Requires that `image` holds what `model` allows, read both through vdiskfs and through
  /// `qemu-img convert` (`format` nil: qemu probes).
  public static func expectDurable(
    _ image: String, _ model: DurabilityModel, format: String? = nil, scratch: Scratch, _ context: String,
    sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    if let v = model.violation(in: try readAll(try openChain(image))) {
      Issue.record("\(context), read by vdiskfs: \(v)", sourceLocation: sourceLocation)
    }
    if let v = model.violation(in: try Qemu.rawContent(of: image, format: format, scratch: scratch)) {
      Issue.record("\(context), read by qemu: \(v)", sourceLocation: sourceLocation)
    }
  }

  /// Every stage when there are at most `limit` (0: before the first); else a sample that
  /// keeps 0, the last stage, every stage next to a sync or a change of kind, and an even
  /// spread of the rest, so that a write-back with many more stages keeps the campaign short.
  public static func crashPoints(_ stages: [FaultInjectingSource.Stage], limit: Int) -> [Int] {
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
