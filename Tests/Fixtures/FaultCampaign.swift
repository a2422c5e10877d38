import Foundation
import SystemPackage
import Testing
import VDiskCore

/// An I/O error at every write-back stage in turn, the chain living on: a crash campaign's
/// workload (`CrashCampaign`) is run once to record its stages S, then for each N of 1...S on a
/// fresh copy of the pristine image whose source fails the operation that would be stage N
/// (`FaultInjectingSource.failStage`) with EIO or ENOSPC, alternately. `make test` walks a
/// sample of about `limit` stages spread over 1...S (the first syncs among them); with
/// VDISKFS_FAULT_ALL=1 in the environment, every N. Each run requires:
/// - the operation that met the fault (opening, a write, a discard or a flush) throws a
///   `VDiskError` of the errno's kind carrying that errno, and nothing else fails;
/// - the chain reads what the durability model allows right after the failure;
/// - the image as the failure left it (a copy: what a crash right after it leaves) is judged by
///   `atFault` (`qemu-img check`, leaks allowed; what a completed flush acknowledged is there);
/// - the same chain then retries the failed operation and finishes the workload, its final flush
///   succeeds, and the image, closed, reads (through vdiskfs) exactly as after the fault-free
///   workload, and is judged by `afterwards`;
/// - except after a failed sync (fdatasync), when the retried flush and every later one must
///   fail with EIO saying why (`ImageFile.dataSync`: the kernel may have dropped what it could
///   not write) while reads go on; the workload stops there and the image left is judged by
///   `atFault` again.
public struct FaultCampaign {
  public var crash: CrashCampaign
  public var errors: [Errno]

  public init(_ crash: CrashCampaign, errors: [Errno] = [.ioError, .noSpace]) {
    self.crash = crash
    self.errors = errors
  }

  /// What one faulted run saw.
  public struct Run {
    /// The fault as it fired (nil when no operation reached stage N).
    public var fired: FaultInjectingSource.Fired?
    /// Which workload step failed (-1: opening).
    public var failedStep: Int?
    /// Whether the fault failed a sync of the open chain, after which the file refuses every
    /// sync (`ImageFile.dataSync`): no later flush succeeds, and the image is left as a crash
    /// would leave it.
    public var poisoned = false
    /// The durability model at the end of the run.
    public var model: DurabilityModel?
    /// Reads made through the source by opening, and in all.
    public var readsAtOpen = 0
    public var reads = 0
  }

  /// The kind of `VDiskError` an errno becomes (`ImageFile`).
  static func kind(of error: Errno) -> VDiskError.Kind {
    switch error {
    case .noSpace, .diskQuotaExceeded, .fileTooLarge: .noSpace
    default: .io
    }
  }

  /// What a campaign fails in turn.
  public enum Target {
    /// The write-back stages of a fault-free run (`faultAtEachStage`).
    case stages([FaultInjectingSource.Stage])
    /// The reads the workload makes while writing (`faultAtEachRead`).
    case reads
  }

  /// `faultAtEachStage` or `faultAtEachRead`, with their default sample sizes; for reads, also
  /// requires that some read failed a workload step.
  @discardableResult
  public func faultAtEach(
    _ target: Target, pristine: String, initial: [UInt8], reference: [UInt8], scratch: Scratch,
    fileExtension: String, sourceLocation: SourceLocation = #_sourceLocation,
    atFault: (_ image: String, _ model: DurabilityModel, _ context: String) throws -> Void,
    afterwards: (_ image: String, _ context: String) throws -> Void
  ) throws -> [Run] {
    switch target {
    case .stages(let stages):
      let runs = try faultAtEachStage(
        stages, pristine: pristine, initial: initial, reference: reference, scratch: scratch,
        fileExtension: fileExtension, sourceLocation: sourceLocation, atFault: atFault, afterwards: afterwards
      )
      Self.expectCoverage(runs, sourceLocation: sourceLocation)
      return runs
    case .reads:
      let runs = try faultAtEachRead(
        pristine: pristine, initial: initial, reference: reference, scratch: scratch,
        fileExtension: fileExtension, sourceLocation: sourceLocation, atFault: atFault, afterwards: afterwards
      )
      #expect(
        runs.contains { $0.failedStep ?? -1 >= 0 }, "no read failed a step", sourceLocation: sourceLocation)
      return runs
    }
  }

  /// Runs the campaign over `stages` (a `runWhole` outcome's) at `points(stages, limit:)`. `atFault` gets a copy of the image as the failure left it, with the model
  /// at that moment; `afterwards` gets the image after the rest of the workload and the chain's
  /// close, which vdiskfs has already read to be `reference` (the guest bytes the fault-free
  /// workload leaves). Returns each run, for the caller's own counts.
  @discardableResult
  public func faultAtEachStage(
    _ stages: [FaultInjectingSource.Stage], limit: Int = 8, pristine: String, initial: [UInt8],
    reference: [UInt8], scratch: Scratch, fileExtension: String,
    sourceLocation: SourceLocation = #_sourceLocation,
    atFault: (_ image: String, _ model: DurabilityModel, _ context: String) throws -> Void,
    afterwards: (_ image: String, _ context: String) throws -> Void
  ) throws -> [Run] {
    let points = Self.points(stages, limit: limit)
    let runs = try campaign(
      points, pristine: pristine, initial: initial, reference: reference, scratch: scratch,
      fileExtension: fileExtension, sourceLocation: sourceLocation, atFault: atFault, afterwards: afterwards
    ) { i, n in
      let error = errors[i % errors.count]
      let context = "\(error) at \(n <= stages.count ? "\(stages[n - 1])" : "stage \(n)")"
      return (error, context, { $0.failStage(n, with: error) })
    }
    let fired = runs.compactMap(\.fired)
    print(
      "fault campaign: \(fileExtension) stages=\(stages.count) points=\(points.count)"
        + " failed-writes=\(fired.filter { $0.kind != .sync }.count)"
        + " failed-syncs=\(fired.filter { $0.kind == .sync }.count)"
        + " failed-opens=\(runs.filter { $0.failedStep == -1 }.count)"
        + " poisoned=\(runs.filter(\.poisoned).count)")
    return runs
  }

  /// The same with EIO on reads instead: the reads the workload makes after opening (table and
  /// bitmap loads, copy-on-write fill, whatever the format reads while writing; opening's own
  /// reads are `expectEachReadFaultFailsOnlyThatRead`'s) are counted in a fault-free run, then
  /// each (or a spread sample of about `limit`; every one with VDISKFS_FAULT_ALL=1) fails in
  /// turn. Open the chain with a small cache (`crash.open`) for tables to be read while writing.
  @discardableResult
  public func faultAtEachRead(
    limit: Int = 4, pristine: String, initial: [UInt8], reference: [UInt8], scratch: Scratch,
    fileExtension: String, sourceLocation: SourceLocation = #_sourceLocation,
    atFault: (_ image: String, _ model: DurabilityModel, _ context: String) throws -> Void,
    afterwards: (_ image: String, _ context: String) throws -> Void
  ) throws -> [Run] {
    let counted = scratch.file("reads.\(fileExtension)")
    try FileManager.default.copyItem(atPath: pristine, toPath: counted)
    let free = try runOnce(
      counted, copy: counted + ".copy", arm: { _ in }, error: .ioError, initial: initial,
      context: "counting reads", sourceLocation: sourceLocation, atFault: atFault)
    try? FileManager.default.removeItem(atPath: counted)
    let first = free.readsAtOpen + 1
    guard free.reads >= first else {
      Issue.record("the workload reads nothing after opening", sourceLocation: sourceLocation)
      return []
    }
    var points = Array(first...free.reads)
    if points.count > limit, ProcessInfo.processInfo.environment["VDISKFS_FAULT_ALL"] != "1" {
      let step = Double(points.count - 1) / Double(limit - 1)
      points = Array(Set((0..<limit).map { points[Int((Double($0) * step).rounded())] })).sorted()
    }
    let runs = try campaign(
      points, pristine: pristine, initial: initial, reference: reference, scratch: scratch,
      fileExtension: fileExtension, sourceLocation: sourceLocation, atFault: atFault, afterwards: afterwards
    ) { _, n in
      (.ioError, "EIO on read \(n) of \(free.reads)", { $0.failReads(numbered: n...n, with: .ioError) })
    }
    print(
      "fault campaign: \(fileExtension) reads=\(free.reads - free.readsAtOpen) points=\(points.count)"
        + " failed-steps=\(runs.filter { $0.failedStep != nil }.count)")
    return runs
  }

  /// Runs the workload once per point on a fresh copy of `pristine`, with the fault `arm` sets.
  private func campaign(
    _ points: [Int], pristine: String, initial: [UInt8], reference: [UInt8], scratch: Scratch,
    fileExtension: String, sourceLocation: SourceLocation,
    atFault: (_ image: String, _ model: DurabilityModel, _ context: String) throws -> Void,
    afterwards: (_ image: String, _ context: String) throws -> Void,
    fault: (_ index: Int, _ point: Int) -> (Errno, String, (FaultInjectingSource) -> Void)
  ) throws -> [Run] {
    var runs: [Run] = []
    for (i, n) in points.enumerated() {
      let (error, context, arm) = fault(i, n)
      let image = scratch.file("fault-\(n).\(fileExtension)")
      let copy = scratch.file("fault-\(n)-at-fault.\(fileExtension)")
      try FileManager.default.copyItem(atPath: pristine, toPath: image)
      defer {
        try? FileManager.default.removeItem(atPath: image)
        try? FileManager.default.removeItem(atPath: copy)
      }
      let run = try runOnce(
        image, copy: copy, arm: arm, error: error, initial: initial, context: context,
        sourceLocation: sourceLocation, atFault: atFault)
      #expect(run.fired != nil, "\(context): no operation met the fault", sourceLocation: sourceLocation)
      if run.poisoned, let model = run.model {
        // No flush succeeded after the failed sync: the image is what a crash leaves.
        try atFault(image, model, context + " (the image at the end, no flush since the failed sync)")
      } else {
        // The retried workload leaves exactly the guest bytes of the fault-free one.
        let final = try readAll(try openChain(image))
        if !Self.identical(final, reference) {
          let d = firstDifference(final, reference) ?? 0
          Issue.record(
            "\(context): after the workload, byte \(hex(d)) differs", sourceLocation: sourceLocation)
        }
        try afterwards(image, context)
      }
      runs.append(run)
    }
    return runs
  }

  /// Every stage number (1...S) when there are at most `limit` stages or VDISKFS_FAULT_ALL=1 is
  /// set; else the first `limit / 3` syncs and an even spread of the stages, the first and the
  /// last included, about `limit` in all.
  public static func points(_ stages: [FaultInjectingSource.Stage], limit: Int) -> [Int] {
    let all = Array(1...max(1, stages.count))
    guard stages.count > limit, ProcessInfo.processInfo.environment["VDISKFS_FAULT_ALL"] != "1" else {
      return all
    }
    var points = Set(stages.filter { $0.kind == .sync }.map(\.number).prefix(limit / 3))
    points.formUnion([1, stages.count])
    let step = Double(stages.count - 1) / Double(max(1, limit - points.count))
    var x = 1.0
    while Int(x.rounded()) <= stages.count {
      points.insert(Int(x.rounded()))
      x += step
    }
    return points.sorted()
  }

  /// One run with the fault `arm` sets, failing with `error` (see the type's comment).
  func runOnce(
    _ image: String, copy: String, arm: (FaultInjectingSource) -> Void, error: Errno, initial: [UInt8],
    context: String,
    sourceLocation: SourceLocation,
    atFault: (_ image: String, _ model: DurabilityModel, _ context: String) throws -> Void
  ) throws -> Run {
    var model = DurabilityModel(initial)
    let source = FaultInjectingSource(wrapping: try FileDescriptorSource.open(image, writable: true))
    arm(source)
    var run = Run()

    /// Requires `thrown` to be the armed error, and judges the state the failure left.
    func failed(_ thrown: any Error, step: Int, chain: LayerChain?) throws {
      guard run.failedStep == nil, let fired = source.fired.first else {
        Issue.record(
          "\(context): step \(step) failed unexpectedly: \(thrown)", sourceLocation: sourceLocation)
        throw thrown
      }
      run.failedStep = step
      run.fired = fired
      if let e = thrown as? VDiskError {
        #expect(e.kind == Self.kind(of: error), "\(context): \(e)", sourceLocation: sourceLocation)
        #expect(e.errno == error.rawValue, "\(context): errno of \(e)", sourceLocation: sourceLocation)
      } else {
        Issue.record("\(context): not a VDiskError: \(thrown)", sourceLocation: sourceLocation)
      }
      if let chain, let v = model.violation(in: try readAll(chain)) {
        Issue.record(
          "\(context): the chain reads wrong after the failure: \(v)", sourceLocation: sourceLocation)
      }
      try FileManager.default.copyItem(atPath: image, toPath: copy)
      try atFault(copy, model, context + " (the image at the failure)")
    }

    let disk: FaultyChain
    do {
      disk = try crash.open(image, source)
    } catch let thrown {
      try failed(thrown, step: -1, chain: nil)
      disk = try crash.open(image, source)  // the fault is used up: opening again works
    }
    run.readsAtOpen = source.readCount
    /// Requires the error of a sync refused after a failed one.
    func expectRefusedSync(_ thrown: any Error, _ what: String) {
      let e = thrown as? VDiskError
      let refused =
        e?.kind == .io && e?.errno == Errno.ioError.rawValue
        && e?.detail.contains("an earlier fdatasync failed") == true
      #expect(refused, "\(context): \(what): \(thrown)", sourceLocation: sourceLocation)
    }
    var serial: UInt64 = 0
    for (index, step) in crash.workload.enumerated() where !run.poisoned || run.failedStep == index {
      var bytes: [UInt8] = []
      if case .write(_, let count) = step {
        serial += 1
        bytes = pattern(count, serial: serial)
      }
      // The failed step is retried once: the fault is used up, so it must work then; except
      // after a failed sync, when the file refuses every later sync (`ImageFile.dataSync`).
      for attempt in 0..<2 {
        do {
          switch step {
          case .write(let offset, _):
            model.attempt(bytes, at: offset)
            _ = try bytes.withUnsafeBytes { try disk.chain.write($0, at: UInt64(offset)) }
          case .discard(let offset, let count, let mode):
            model.attempt([UInt8](repeating: 0, count: count), at: offset)
            try disk.chain.discard(at: UInt64(offset), length: UInt64(count), mode: mode)
          case .flush:
            try disk.chain.flush()
            model.flushed()
          }
          break
        } catch let thrown {
          if run.poisoned {
            expectRefusedSync(thrown, "step \(index) after the failed sync")
            break
          }
          guard attempt == 0 else {
            Issue.record("\(context): step \(index) failed again: \(thrown)", sourceLocation: sourceLocation)
            throw thrown
          }
          try failed(thrown, step: index, chain: disk.chain)
          run.poisoned = run.fired?.kind == .sync
        }
      }
    }
    if run.poisoned {
      // The workload stops at the refused retry (its later writes could overlap pending ones,
      // which the model cannot judge); a later flush is refused too, and reads still work.
      do {
        try disk.chain.flush()
        Issue.record("\(context): a flush after the failed sync succeeded", sourceLocation: sourceLocation)
      } catch {
        expectRefusedSync(error, "a later flush")
      }
      if let v = model.violation(in: try readAll(disk.chain)) {
        Issue.record(
          "\(context): the chain reads wrong after the refused flushes: \(v)", sourceLocation: sourceLocation)
      }
    }
    run.model = model
    run.reads = source.readCount
    #expect(source.fired.count <= 1, "\(context): \(source.fired)", sourceLocation: sourceLocation)
    if run.fired == nil, let fired = source.fired.first {
      Issue.record("\(context): the fault (\(fired)) reached no caller", sourceLocation: sourceLocation)
    }
    return run
  }

  /// Requires the runs to have failed writes with every errno of `errors` and at least one sync.
  public static func expectCoverage(
    _ runs: [Run], errors: [Errno] = [.ioError, .noSpace], sourceLocation: SourceLocation = #_sourceLocation
  ) {
    let fired = runs.compactMap(\.fired)
    for error in errors {
      #expect(
        fired.contains { $0.error == error && $0.kind != .sync }, "no write failed with \(error)",
        sourceLocation: sourceLocation)
    }
    #expect(fired.contains { $0.kind == .sync }, "no sync failed", sourceLocation: sourceLocation)
  }

  /// Whether two byte arrays are equal (memcmp: a byte loop over megabytes is slow in debug).
  public static func identical(_ a: [UInt8], _ b: [UInt8]) -> Bool { a.count == b.count && same(a, 0, b) }

  /// Requires `image` to hold what `model` allows, read by `qemu-img convert` (as `format`), or
  /// through vdiskfs when `format` is nil.
  public static func expectHolds(
    _ image: String, _ model: DurabilityModel, format: String?, scratch: Scratch, _ context: String,
    sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    let content =
      if let format { try Qemu.rawContent(of: image, format: format, scratch: scratch) } else {
        try readAll(try openChain(image))
      }
    if let v = model.violation(in: content) {
      Issue.record(
        "\(context), read by \(format == nil ? "vdiskfs" : "qemu"): \(v)", sourceLocation: sourceLocation)
    }
  }
}
