import Testing
import VDiskCore

extension FaultCampaign {
  /// The fault campaign of a format that `qemu-img check` judges (qcow2, vmdk, vdi): runs
  /// `workload` whole once from `pristine` (whose guest bytes are `initial`) to record its stages,
  /// then a fault at each stage (or, with `reads`, at each read while writing, over a cache of
  /// `readsCacheBudget` bytes). Every image a fault leaves must pass `qemu-img check` (leaks
  /// allowed when `leaksAllowed`) and hold what was flushed; every finished image must pass the
  /// check too.
  public static func qemuJudged(
    _ workload: [CrashCampaign.Step], driver: any FormatDriver.Type, format: String, pristine: String,
    initial: [UInt8], reads: Bool, readsCacheBudget: Int, minStages: Int, leaksAllowed: Bool = true,
    scratch: Scratch, sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    let crash = CrashCampaign(workload: workload) { image, source in
      try FaultyChain(image, source: source, format: driver, cacheBudget: reads ? readsCacheBudget : 32 << 20)
    }
    let reference = try crash.runWhole(
      pristine: pristine, at: scratch.file("full.\(format)"), initial: initial, kinds: [.write, .sync],
      minStages: minStages)
    try FaultCampaign(crash).faultAtEach(
      reads ? .reads : .stages(reference.stages), pristine: pristine, initial: initial,
      reference: reference.model.durable, scratch: scratch, fileExtension: format,
      sourceLocation: sourceLocation
    ) { image, model, context in
      try Qemu.expectCheck(image, format: format, leaksAllowed: leaksAllowed, context)
      try expectHolds(image, model, format: format, scratch: scratch, context)
    } afterwards: { image, context in
      try Qemu.expectCheck(image, format: format, leaksAllowed: leaksAllowed, context)
    }
  }
}
