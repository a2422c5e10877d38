import Foundation
import TestSupport
import Testing

/// vmdk writes through the real binary, with the shared runs of `WriteMountRuns`.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct VMDKWriteMountTests {
  struct Setup: CustomTestStringConvertible, Sendable {
    var name: String
    /// Makes the image; returns its path and the files that must not change (a parent).
    var make: @Sendable (Scratch) throws -> (String, [String])
    var testDescription: String { name }
  }

  static let setups: [Setup] = [
    Setup(name: "monolithicSparse") { s in
      let img = s.file("w.vmdk")
      try Qemu.create(img, format: "vmdk", size: "24M", options: ["subformat=monolithicSparse"])
      try Qemu.io(img, format: "vmdk", ["write -P 0x21 1M 3M"])
      return (img, [])
    },
    Setup(name: "twoGbMaxExtentSparse") { s in
      let img = s.file("w.vmdk")
      try Qemu.create(img, format: "vmdk", size: "24M", options: ["subformat=twoGbMaxExtentSparse"])
      try Qemu.io(img, format: "vmdk", ["write -P 0x22 5M 2M"])
      return (img, [])
    },
    Setup(name: "monolithicFlat") { s in
      let img = s.file("w.vmdk")
      try Qemu.create(img, format: "vmdk", size: "24M", options: ["subformat=monolithicFlat"])
      try Qemu.io(img, format: "vmdk", ["write -P 0x23 0 1M"])
      return (img, [])
    },
    Setup(name: "delta over a sparse parent") { s in
      let parent = s.file("parent.vmdk")
      try Qemu.create(parent, format: "vmdk", size: "24M")
      try Qemu.io(parent, format: "vmdk", ["write -P 0x24 0 24M"])
      let img = s.file("w.vmdk")
      try Qemu.create(img, format: "vmdk", size: "24M", backing: "parent.vmdk", backingFormat: "vmdk")
      return (img, [parent])
    },
  ]

  @Test(arguments: setups)
  func differentialRandomWrites(_ setup: Setup) throws {
    for seed: UInt64 in [11, 12] {
      let scratch = try Scratch("vmdk-wdiff")
      defer { scratch.remove() }
      let (image, unchanged) = try setup.make(scratch)
      try WriteMountRuns.differential(image: image, scratch: scratch, seed: seed, unchanged: unchanged)
    }
  }

  @Test(arguments: [21, 22, 23] as [UInt64])
  func killDuringWrites(seed: UInt64) throws {
    let scratch = try Scratch("vmdk-wcrash")
    defer { scratch.remove() }
    let image = scratch.file("c.vmdk")
    try Qemu.create(image, format: "vmdk", size: "16M", options: ["subformat=monolithicSparse"])
    try Qemu.io(image, format: "vmdk", ["write -P 0x31 0 2M"])
    try WriteMountRuns.crash(image: image, scratch: scratch, seed: seed)
  }

  /// ext4 on a loop device over disk.raw: zeroed grains let fstrim free what it discards.
  @Test func ext4WithFstrim() throws {
    let scratch = try Scratch("vmdk-ext4")
    defer { scratch.remove() }
    let image = scratch.file("fs.vmdk")
    try Qemu.create(image, format: "vmdk", size: "192M", options: ["zeroed_grain=on"])
    try WriteMountRuns.ext4(image: image, scratch: scratch)
  }

  /// Without zeroed-grain entries (version 1, qemu-img's default) a discard writes zeros: the
  /// file system is intact, nothing is freed.
  @Test func ext4WithoutZeroedGrains() throws {
    let scratch = try Scratch("vmdk-ext4")
    defer { scratch.remove() }
    let image = scratch.file("fs.vmdk")
    try Qemu.create(image, format: "vmdk", size: "192M")
    try WriteMountRuns.ext4(image: image, scratch: scratch, expectTrimmed: false)
  }

  /// A read-write mount of a streamOptimized vmdk (which vdiskfs does not write) goes read-only
  /// with one notice naming the reason, and serves the image's bytes.
  @Test func streamOptimizedMountsReadOnlyWithOneNotice() throws {
    let scratch = try Scratch("vmdk-mount-ro")
    defer { scratch.remove() }
    let source = scratch.file("src.vmdk")
    try Qemu.create(source, format: "vmdk", size: "4M")
    try Qemu.io(source, format: "vmdk", ["write -P 0x3d 0 1M"])
    let img = scratch.file("stream.vmdk")
    try Qemu.img("convert", "-O", "vmdk", "-o", "subformat=streamOptimized", source, img)
    let before = try Data(contentsOf: URL(fileURLWithPath: img))
    let mnt = try scratch.directory("mnt")
    let r = try run("timeout", ["60", vdiskfsBinary, img, mnt])
    defer {
      _ = try? run("fusermount3", ["-u", mnt], check: false)
      waitForDaemonExit(mnt)
    }
    #expect(r.stderr.contains("mounting read-only") && r.stderr.contains("stream-optimized"), "\(r.stderr)")
    #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
    #expect(try statFile(mnt + "/disk.raw").st_mode & 0o777 == 0o444)
    #expect(try compareFiles(mnt + "/disk.raw", try Qemu.rawFile(of: img, scratch: scratch)) == nil)
    #expect(try Data(contentsOf: URL(fileURLWithPath: img)) == before)
  }
}
