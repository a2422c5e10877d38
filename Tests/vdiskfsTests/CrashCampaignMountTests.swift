import Foundation
import TestSupport
import Testing

/// The crash campaign (issue 17): for every writable format, crash points in a row, each a fresh
/// image under a seeded mixed write/fsync/discard load (`CrashLoad`) whose daemon gets `kill -9`
/// at a seeded moment. After each: the format's judge (`qemu-img check` finds no errors, leaks
/// allowed; VHDX after log replay; VHD, which `qemu-img check` does not support, a conversion and
/// a sound layout), every byte acknowledged by a completed fsync in what `qemu-img convert -O raw`
/// reads (a discard so acknowledged reads as zeros), and a read-only vdiskfs mount reading the
/// same as QEMU.
///
/// `VDISKFS_CRASH_POINTS` points per format (default 3: `make test` runs this), from seed
/// `VDISKFS_CRASH_SEED` on (point i has seed SEED+i); `VDISKFS_CRASH_FORMATS` (a comma list)
/// limits the formats. `make crashtest` runs 50 points per format and tabulates the summary line
/// each format prints. A failing point names the command that reruns it alone.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct CrashCampaignMountTests {
  static let environment = ProcessInfo.processInfo.environment
  static let points = environment["VDISKFS_CRASH_POINTS"].flatMap { Int($0) } ?? 3
  static let baseSeed = environment["VDISKFS_CRASH_SEED"].flatMap { UInt64($0) } ?? 1700
  static let formats = environment["VDISKFS_CRASH_FORMATS"].flatMap {
    $0.isEmpty ? nil : $0.split(separator: ",")
  }

  /// A 32 MiB guest disk.
  static let size = 32 << 20

  @Test(arguments: CrashFormat.allCases)
  func killedUnderMixedLoad(_ format: CrashFormat) throws {
    if let formats = Self.formats, !formats.contains(Substring(format.rawValue)) {
      print("crash campaign: \(format) not in VDISKFS_CRASH_FORMATS")
      return
    }
    var figures = CampaignFigures()
    let began = Date()
    for index in 0..<Self.points {
      let seed = Self.baseSeed &+ UInt64(index)
      let problems: [String]
      do {
        problems = try Self.point(format, seed: seed, figures: &figures)
      } catch {
        problems = ["\(error)"]
      }
      figures.points += 1
      if !problems.isEmpty { figures.failed += 1 }
      #expect(
        problems.isEmpty,
        """
        \(format) crash point \(index), seed \(seed): \(problems.joined(separator: "; "))
        rerun it alone: make crashtest FORMATS=\(format) POINTS=1 SEED=\(seed)
        """)
    }
    figures.seconds = Date().timeIntervalSince(began)
    print(figures.summary(format, seed: Self.baseSeed))
    // A campaign in which no fsync completed would have judged nothing.
    #expect(Self.points == 0 || figures.acknowledgedBytes > 0, "no fsync completed before a kill")
  }

  /// One crash point: what went wrong (nothing: it passed).
  static func point(_ format: CrashFormat, seed: UInt64, figures: inout CampaignFigures) throws -> [String] {
    let scratch = try Scratch("crash-\(format)")
    defer { scratch.remove() }
    let image = try format.makeImage(in: scratch, size: size, seed: seed)
    let initial = try Qemu.rawContent(of: image, format: format.rawValue, scratch: scratch)
    guard initial.count == size else { return ["the new image holds \(initial.count) bytes"] }
    let outcome: CrashLoad.Outcome
    do {
      let mount = try KillableMount(image, scratch: scratch, label: "crash", arguments: format.mountArguments)
      defer { mount.tearDown() }
      outcome = try CrashLoad(seed: seed, size: size).run(on: mount, initial: initial)
    }
    figures.record(outcome)

    var problems = try format.crashProblems(image, scratch: scratch)
    guard problems.isEmpty else { return problems }
    let raw = try Qemu.rawFile(of: image, format: format.rawValue, scratch: scratch)
    let content = try [UInt8](Data(contentsOf: URL(fileURLWithPath: raw)))
    if let violation = outcome.model.violation(in: content) {
      problems.append(
        "after \(outcome.operations) operations, \(outcome.fsyncs) fsyncs, kill \(outcome.landed): "
          + "acknowledged data lost: \(violation)")
    }
    let mounted = try MountedImage.mount(image, in: scratch, format.mountArguments)
    defer { mounted.unmount() }
    if let difference = try compareFiles(mounted.diskRaw, raw) {
      problems.append("vdiskfs reads otherwise than qemu: \(difference)")
    }
    return problems
  }
}

/// A writable format of the campaign, its image and its judge.
enum CrashFormat: String, CaseIterable, Sendable, CustomStringConvertible {
  case qcow2, vmdk, vhdx, vpc, vdi, qed, raw

  var description: String { rawValue }

  /// Stated for raw, so the mount never depends on probing.
  var mountArguments: [String] { self == .raw ? ["--format", "raw"] : [] }

  /// A new image of `size` bytes with qemu's patterns scattered over it; variants alternate
  /// with the seed (qcow2 and qed 4 KiB / 64 KiB clusters, vdi dynamic / static).
  func makeImage(in scratch: Scratch, size: Int, seed: UInt64) throws -> String {
    let image = scratch.file("disk.\(rawValue)")
    let options: [String] =
      switch self {
      case .qcow2: ["cluster_size=\(seed % 2 == 0 ? 4096 : 65536)"]
      case .vmdk: ["subformat=monolithicSparse"]
      case .vhdx: ["block_size=1M"]
      case .vpc: ["subformat=dynamic", "force_size=on"]
      case .vdi: ["static=\(seed % 2 == 0 ? "off" : "on")"]
      case .qed: ["cluster_size=\(seed % 2 == 0 ? 4096 : 65536)", "table_size=2"]
      case .raw: []
      }
    try Qemu.create(image, format: rawValue, size: "\(size)", options: options)
    try Qemu.scatterPatterns(
      image, format: rawValue, size: UInt64(size), count: 12, seed: seed, maxUnits: 4096)
    return image
  }

  /// What is wrong with the image right after a kill (nothing: sound, leaks allowed).
  func crashProblems(_ image: String, scratch: Scratch) throws -> [String] {
    switch self {
    case .qcow2, .vmdk, .vdi, .qed:
      return try WriteMountRuns.corruptionProblems(image)
    case .vhdx:
      // QEMU refuses a dirty log read-only: the judge replays it (VHDXWriteMountTests).
      return try VHDXWriteMountTests.replayProblems(image, scratch: scratch)
    case .vpc:
      // No `qemu-img check` for vpc: the conversion (by the caller) and the layout.
      return try VHDWriteMountTests.layoutProblems(image)
    case .raw:
      return []  // no metadata: the data check is all
    }
  }
}

/// The figures a format's campaign prints.
struct CampaignFigures {
  var points = 0
  var failed = 0
  var landed = [Int](repeating: 0, count: CrashLoad.Moment.allCases.count)
  var operations = 0
  var fsyncs = 0
  var acknowledgedBytes = 0
  var seconds = 0.0

  mutating func record(_ outcome: CrashLoad.Outcome) {
    landed[outcome.landed.rawValue] += 1
    operations += outcome.operations
    fsyncs += outcome.fsyncs
    acknowledgedBytes += outcome.acknowledgedBytes
  }

  /// One line, `crash campaign: format=… points=… …`, which `make crashtest` tabulates.
  func summary(_ format: CrashFormat, seed: UInt64) -> String {
    let moments = CrashLoad.Moment.allCases.map { "\($0)=\(landed[$0.rawValue])" }.joined(separator: " ")
    return "crash campaign: format=\(format) points=\(points) failed=\(failed) \(moments) "
      + "operations=\(operations) fsyncs=\(fsyncs) acknowledged-bytes=\(acknowledgedBytes) "
      + "seconds=\(String(format: "%.1f", seconds)) seed=\(seed)"
  }
}
