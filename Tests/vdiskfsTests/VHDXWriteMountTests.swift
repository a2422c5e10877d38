import Foundation
import TestSupport
import Testing

/// Writing VHDX images through a real mount (the shared `WriteMountRuns`): differential runs on
/// dynamic and fixed images, kill -9 at random moments followed by the log-replay check, and the
/// ext4/fstrim workload through a loop device.
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
    let copy = scratch.file("copy-\(UUID().uuidString.prefix(8)).vhdx")
    try run("cp", ["--sparse=always", image, copy])
    let repaired = try run("qemu-img", ["check", "-r", "all", "-f", "vhdx", copy], check: false)
    #expect(repaired.status == 0, "qemu-img check -r all: \(repaired.stdout)\(repaired.stderr)")
    try expectCleanCheck(copy)
    // A read-write mount replays the log into the file before anything else.
    let mounted = try MountedImage.mount(image, in: scratch, writable: true)
    mounted.unmount()
    try expectCleanCheck(image)
    try expectSameContent(image, try Qemu.rawFile(of: copy, scratch: scratch))
  }

  @Test func ext4WorkloadWithFstrim() throws {
    let scratch = try Scratch("vhdx-wext4")
    defer { scratch.remove() }
    let image = scratch.file("fs.vhdx")
    try Qemu.create(image, format: "vhdx", size: "256M", options: ["block_size=1M"])
    try WriteMountRuns.ext4(image: image, scratch: scratch)
  }
}
