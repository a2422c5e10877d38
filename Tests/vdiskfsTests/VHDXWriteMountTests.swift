import Foundation
import TestSupport
import Testing

/// Writing VHDX images through a real mount (the shared `WriteMountRuns`): differential runs on
/// dynamic, fixed and differencing images, kill -9 at random moments (and, for a differencing
/// child, while a log entry is pending) followed by the log-replay check, and the ext4/fstrim
/// workload through a loop device.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct VHDXWriteMountTests {
  /// A dynamic VHDX with 1 MiB blocks (or the default for its size) and qemu's patterns.
  static func dynamic(_ scratch: Scratch, size: UInt64, blockSize: String? = "1M", seed: UInt64) throws
    -> String
  {
    let image = scratch.file("disk.vhdx")
    try Qemu.create(
      image, format: "vhdx", size: "\(size)", options: blockSize.map { ["block_size=\($0)"] } ?? [])
    try Qemu.scatterPatterns(image, format: "vhdx", size: size, count: 20, seed: seed, maxUnits: 4096)
    return image
  }

  @Test(arguments: [UInt64(1), 2])
  func dynamicDifferential(seed: UInt64) throws {
    let scratch = try Scratch("vhdx-wmount")
    defer { scratch.remove() }
    let image = try Self.dynamic(scratch, size: 48 << 20, blockSize: seed == 1 ? "1M" : nil, seed: seed)
    try WriteMountRuns.differential(image: image, scratch: scratch, seed: seed)
  }

  @Test(arguments: [UInt64(3), 4])
  func fixedDifferential(seed: UInt64) throws {
    let scratch = try Scratch("vhdx-wmount-fixed")
    defer { scratch.remove() }
    let image = scratch.file("fixed.vhdx")
    try Qemu.create(
      image, format: "vhdx", size: "32M",
      options: ["subformat=fixed", "block_size=1M", "block_state_zero=off"])
    try Qemu.scatterPatterns(image, format: "vhdx", size: 32 << 20, count: 20, seed: seed, maxUnits: 4096)
    let size = try FileManager.default.attributesOfItem(atPath: image)[.size] as? UInt64
    try WriteMountRuns.differential(image: image, scratch: scratch, seed: seed)
    // Every block of this fixed disk is FULLY_PRESENT: writes and discards never grow the file.
    #expect(try FileManager.default.attributesOfItem(atPath: image)[.size] as? UInt64 == size)
  }

  /// kill -9 mid-run; then the log must replay: `qemu-img check -r all` on a copy, and vdiskfs's
  /// own read-write open on the image itself, after which qemu needs no replay and finds it clean.
  @Test(arguments: [UInt64(11), 12, 13])
  func killedMidRunReplaysTheLog(seed: UInt64) throws {
    let scratch = try Scratch("vhdx-wcrash")
    defer { scratch.remove() }
    let image = try Self.dynamic(scratch, size: 32 << 20, seed: seed)
    try WriteMountRuns.crash(image: image, scratch: scratch, seed: seed) { image in
      try Self.expectReplays(image, scratch: scratch)
    }
  }

  static func expectReplays(_ image: String, scratch: Scratch) throws {
    for problem in try replayProblems(image, scratch: scratch) { Issue.record(Comment(rawValue: problem)) }
  }

  /// What goes wrong replaying a killed image's log (none: it replays): QEMU's replay
  /// (`qemu-img check -r all`, on a copy: QEMU refuses a dirty log read-only) must succeed and
  /// leave a clean image; vdiskfs's (a read-write mount and unmount of the image itself) too,
  /// and both must read the same.
  static func replayProblems(_ image: String, scratch: Scratch) throws -> [String] {
    var problems: [String] = []
    let copy = scratch.file("copy-\(UUID().uuidString.prefix(8)).vhdx")
    defer { try? FileManager.default.removeItem(atPath: copy) }
    try run("cp", ["--sparse=always", image, copy])
    let repaired = try run("qemu-img", ["check", "-r", "all", "-f", "vhdx", copy], check: false)
    if repaired.status != 0 { problems.append("qemu-img check -r all: \(repaired.stdout)\(repaired.stderr)") }
    let afterQemu = try qemuCheck(copy)
    if afterQemu.status != 0 {
      problems.append("after qemu's replay: \(afterQemu.stdout)\(afterQemu.stderr)")
    }
    // A read-write mount replays the log into the file before anything else.
    let mounted = try MountedImage.mount(image, in: scratch, writable: true)
    mounted.unmount()
    let afterVdiskfs = try qemuCheck(image)
    if afterVdiskfs.status != 0 {
      problems.append("after vdiskfs's replay: \(afterVdiskfs.stdout)\(afterVdiskfs.stderr)")
    }
    guard problems.isEmpty else { return problems }
    let raw = try Qemu.rawFile(of: copy, scratch: scratch)
    defer { try? FileManager.default.removeItem(atPath: raw) }
    let compare = try run("qemu-img", ["compare", "-F", "raw", image, raw], check: false)
    if compare.status != 0 { problems.append("replays differ: \(compare.stdout)\(compare.stderr)") }
    return problems
  }

  @Test func ext4WorkloadWithFstrim() throws {
    let scratch = try Scratch("vhdx-wext4")
    defer { scratch.remove() }
    let image = scratch.file("fs.vhdx")
    try Qemu.create(image, format: "vhdx", size: "256M", options: ["block_size=1M"])
    try WriteMountRuns.ext4(image: image, scratch: scratch)
  }

  // MARK: Differencing (AVHDX)

  /// A differencing child, built in test code (qemu-img cannot make one), over a dynamic parent
  /// qemu-img made and filled with qemu's patterns.
  struct Differencing {
    let child: String
    let parent: String
    let builder: VHDXBuilder
    /// The parent's guest bytes, as qemu reads them.
    let parentBytes: [UInt8]
    /// A raw file of what the child should read: its own blocks over the parent's bytes.
    let expected: String

    /// Every block state a writer meets (full, partial, zero, unmapped, undefined); the blocks
    /// not named are NOT_PRESENT, where the parent shows through.
    init(_ scratch: Scratch, size: UInt64, sectorSize: UInt64, seed: UInt64) throws {
      parent = scratch.file("base.vhdx")
      try Qemu.create(parent, format: "vhdx", size: "\(size)", options: ["block_size=1M"])
      try Qemu.scatterPatterns(parent, format: "vhdx", size: size, count: 20, seed: seed, maxUnits: 4096)
      parentBytes = try Qemu.rawContent(of: parent, format: "vhdx", scratch: scratch)
      var builder = VHDXBuilder.differencing(
        virtualSize: size, parentLinkage: try VHDXBuilder.currentHeader(of: parent).dataWriteGuid)
      builder.logicalSectorSize = sectorSize
      let perBlock = Int((1 << 20) / sectorSize)
      builder.blocks = [
        0: .full(0xA1), 1: .partial(0xA2, [0..<1, 8..<24, perBlock - 8..<perBlock]), 2: .state(2),
        3: .state(3), 5: .partial(0xA3, [1..<2, 3..<perBlock]), 6: .state(1), 9: .full(0xA4),
        12: .partial(0xA5, [0..<perBlock / 2]), 13: .state(2),
      ]
      self.builder = builder
      child = scratch.file("child.vhdx")
      try builder.write(to: child)
      expected = scratch.file("expected.raw")
      try Data(builder.expected(over: parentBytes)).write(to: URL(fileURLWithPath: expected))
    }

    /// Read back in test code (not by vdiskfs), the child has no pending log and holds `want`.
    func expectHolds(_ want: [UInt8], _ context: String, sourceLocation: SourceLocation = #_sourceLocation)
      throws
    {
      #expect(
        try !VHDXBuilder.hasPendingLog(child), "\(context): a log entry is pending",
        sourceLocation: sourceLocation)
      let got = try builder.guestBytes(of: child, over: parentBytes)
      #expect(
        firstDifference(got, want) == nil, "\(context): the child holds other bytes",
        sourceLocation: sourceLocation)
    }
  }

  // QEMU 7.2 cannot open a differencing VHDX (`qemu-img convert`, `check` and `info` all say
  // "Could not open 'child.vhdx': Operation not supported"; vhdx-notes, "qemu implementation
  // limits"), so it can neither read nor judge one: a read-only vdiskfs mount reads the child
  // (Reader.vdiskfs, Judge.none), and test code reads its BAT and sector bitmaps back
  // (VHDXBuilder.guestBytes) as the judge independent of vdiskfs.

  /// Random writes, zero-ranges, hole punches and reads through the mount of a differencing
  /// child: the first read must be the built bytes (the parent's where the child has none), reads
  /// then follow the mirror; afterwards the child holds the mirror and the parent is unchanged.
  @Test(arguments: zip([UInt64(21), 22], [UInt64(512), 4096]))
  func differencingDifferential(seed: UInt64, sectorSize: UInt64) throws {
    let scratch = try Scratch("vhdx-wmount-diff")
    defer { scratch.remove() }
    let image = try Differencing(scratch, size: 16 << 20, sectorSize: sectorSize, seed: seed)
    let mirror = try WriteMountRuns.differential(
      image: image.child, scratch: scratch, seed: seed, steps: 250, maxWrite: 1 << 20, format: "vhdx",
      judge: .none,
      reader: .vdiskfs, unchanged: [image.parent], expected: image.expected)
    try image.expectHolds(
      [UInt8](try Data(contentsOf: URL(fileURLWithPath: mirror))), "seed \(seed) after the run")
  }

  /// kill -9 during a write or fsync through the mount of a differencing child, at a moment its
  /// log holds an entry: a read-only mount replays the log in memory (the file unchanged), a
  /// read-write mount replays it into the file, and then test code reads the child as the
  /// read-only mount did; every fsync'd byte is there, and the parent is unchanged.
  @Test(arguments: [UInt64(23), 24])
  func differencingKilledWithThePendingLogReplays(seed: UInt64) throws {
    let scratch = try Scratch("vhdx-wcrash-diff")
    defer { scratch.remove() }
    let image = try Differencing(scratch, size: 16 << 20, sectorSize: 512, seed: seed)
    let parentSum = try WriteMountRuns.fileChecksum(image.parent)
    let expectReplays = { (child: String) throws in
      let before = try WriteMountRuns.fileChecksum(child)
      let replayed = try WriteMountRuns.Reader.vdiskfs.rawFile(of: child, format: "vhdx", scratch: scratch)
      #expect(try WriteMountRuns.fileChecksum(child) == before, "a read-only mount changed the file")
      #expect(try VHDXBuilder.hasPendingLog(child))
      let mounted = try MountedImage.mount(child, in: scratch, writable: true)
      mounted.unmount()
      try image.expectHolds(
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: replayed))), "seed \(seed) replayed")
    }
    try WriteMountRuns.crash(
      image: image.child, scratch: scratch, seed: seed, reader: .vdiskfs, afterCrash: expectReplays,
      killWhen: VHDXBuilder.hasPendingLog)
    #expect(try WriteMountRuns.fileChecksum(image.parent) == parentSum, "the parent changed")
  }
}
