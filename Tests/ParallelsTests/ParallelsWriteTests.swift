import Foundation
import Parallels
import TestSupport
import Testing
import VDiskCore

/// Writes to Parallels images as QEMU makes them: clusters allocated at the end of the data area,
/// the BAT updated, in_use set while changes are unflushed and cleared by a flush; `qemu-img
/// check` must find the image clean and `qemu-img compare` identical to the mirror.
@Suite struct ParallelsWriteTests {
  struct Scenario: Sendable, CustomTestStringConvertible {
    var name: String
    var clusterSize: UInt64 = 64 << 10
    var prefilled = false
    var size: UInt64 = 20 << 20
    var cacheSize: Int?
    var seeds: [UInt64] = [1, 2]
    var testDescription: String { name }
  }

  static let scenarios = [
    Scenario(name: "empty, 64 KiB clusters"),
    Scenario(name: "prefilled, 1 MiB clusters", clusterSize: 1 << 20, prefilled: true),
    Scenario(
      name: "prefilled, 4 KiB clusters", clusterSize: 4096, prefilled: true, size: 6 << 20, seeds: [3]),
    Scenario(
      name: "odd size, tiny cache", prefilled: true, size: (9 << 20) + 3 * 512, cacheSize: 64, seeds: [4]),
  ]

  @Test(arguments: scenarios)
  func randomized(_ s: Scenario) throws {
    for seed in s.seeds {
      let scratch = try Scratch("prl-write")
      defer { scratch.remove() }
      let image = scratch.file("disk.hds")
      try Qemu.create(
        image, format: "parallels", size: "\(s.size)", options: ["cluster_size=\(s.clusterSize)"])
      if s.prefilled {
        try Qemu.scatterPatterns(
          image, format: "parallels", size: s.size, count: 12, seed: seed, maxUnits: 4096)
      }
      let initial = try Qemu.rawContent(of: image, scratch: scratch)
      do {
        let disk = MirroredDisk(
          chain: try openWritable(image, cacheSize: s.cacheSize, format: ParallelsDriver.self),
          mirror: initial)
        var run = DifferentialRun(name: s.name, seed: seed, ops: 300, unit: s.clusterSize)
        run.alignment = .unitOrSector
        try run.exercise(disk, mirrorPath: scratch.file("mirror.raw"))
      }
      try Qemu.expectCleanAndIdentical(
        image, format: "parallels", to: scratch.file("mirror.raw"), "\(s.name) seed \(seed)")
      #expect(try field(image, at: 44, width: 4) == 0, "in_use cleared")
    }
  }

  /// in_use: set (on disk) by the first change, cleared by the flush; the file ends where the
  /// last cluster does, as after QEMU's close.
  @Test func inUseFollowsUnflushedChanges() throws {
    let scratch = try Scratch("prl-inuse")
    defer { scratch.remove() }
    let image = scratch.file("u.hds")
    try Qemu.create(image, format: "parallels", size: "8M", options: ["cluster_size=1M"])
    let chain = try openWritable(image, format: ParallelsDriver.self)
    #expect(try field(image, at: 44, width: 4) == 0)
    let data = [UInt8](repeating: 0xA7, count: 5000)
    _ = try data.withUnsafeBytes { try chain.write($0, at: (3 << 20) + 100) }
    #expect(try fieldLE(image, at: 44, width: 4) == 0x746F_6E59)
    try chain.flush()
    #expect(try field(image, at: 44, width: 4) == 0)
    #expect(try fileSize(image) == 2 << 20)  // data offset 1 MiB + one cluster
    #expect(try chain.read(at: (3 << 20) + 100, count: 5000) == data)
    #expect(try Qemu.check(image, format: "parallels").isClean)
    let map = try Qemu.map(image, format: "parallels").filter(\.data)
    #expect(map.map(\.start) == [3 << 20])
    #expect(map.first?.offset == 1 << 20)
  }

  /// The old signature: the BAT counts sectors; new clusters are named in sectors too.
  @Test func oldSignatureImageIsWrittenInSectors() throws {
    let scratch = try Scratch("prl-write-old")
    defer { scratch.remove() }
    let builder = ParallelsBuilder(
      clustersSignature: false, sectors: 8 * 128, map: [1, nil, 0, nil, nil, nil, nil, nil],
      slots: ParallelsBuilder.patterned(2, clusterSize: 128 * 512, seed: 3))
    let image = scratch.file("old.hds")
    try builder.write(to: image)
    var mirror = builder.content
    let chain = try openWritable(image, format: ParallelsDriver.self)
    for (offset, count, value) in [(70_000, 100_000, 0x31), (5 * 65536 + 10, 3, 0x32), (0, 512, 0x33)] {
      let data = [UInt8](repeating: UInt8(value), count: count)
      _ = try data.withUnsafeBytes { try chain.write($0, at: UInt64(offset)) }
      mirror.replaceSubrange(offset..<offset + count, with: data)
    }
    try chain.flush()
    let raw = scratch.file("mirror.raw")
    try Data(mirror).write(to: URL(fileURLWithPath: raw))
    try Qemu.expectCleanAndIdentical(image, format: "parallels", to: raw, "old signature")
    // Cluster 1 went to the end of the data area: 64 KiB + 2 clusters, in sectors.
    #expect(try fieldLE(image, at: 64 + 4, width: 4) == (65536 + 2 * 65536) / 512)
  }

  /// What a writable open refuses (the mount then falls back to read-only).
  @Test func writableOpenRefusesUnsafeImages() throws {
    let scratch = try Scratch("prl-write-hostile")
    defer { scratch.remove() }
    let image = scratch.file("h.hds")
    try Qemu.create(image, format: "parallels", size: "4M", options: ["cluster_size=64k"])
    try Qemu.io(image, format: "parallels", ["write -P 0x42 0 192k"])  // clusters at 64k, 128k, 192k
    let original = try Data(contentsOf: URL(fileURLWithPath: image))
    let cases: [(UInt64, UInt64, [String])] = [
      (44, 0x746F_6E59, ["not closed cleanly", "qemu-img check -r all"]),
      (56, 1, ["format extension"]),
      (64 + 4, 1, ["named by an earlier BAT entry"]),
      (64 + 4, 0, []),  // a hole in the middle: fine
      (64 + 8, 0, []),
      (64 + 4, 100, ["beyond end of file"]),
      (32, 8, ["covers less than the disk"]),
      (48, 0, ["off its cluster boundaries"]),
    ]
    for (offset, value, fragments) in cases {
      try original.write(to: URL(fileURLWithPath: image))
      try patchLE(image, at: offset, value, width: 4)
      if fragments.isEmpty {
        _ = try openWritable(image, format: ParallelsDriver.self)
      } else {
        expectVDiskError(.readOnly, [image] + fragments) {
          _ = try openWritable(image, format: ParallelsDriver.self)
        }
      }
    }
    // A cluster size that is not a power of two (legacy 252 KiB).
    let odd = scratch.file("odd.hds")
    try Qemu.create(odd, format: "parallels", size: "4M", options: ["cluster_size=252k"])
    expectVDiskError(.readOnly, [odd, "not a power of two"]) {
      _ = try openWritable(odd, format: ParallelsDriver.self)
    }
    #expect(try openChain(odd).virtualSize == 4 << 20)
  }
}

/// A read-write mount through the real binary: writes through disk.raw land, the unmount clears
/// in_use, qemu finds the image clean and identical to the mirror.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct ParallelsWriteMountTests {
  @Test func mountsReadWriteAndWrites() throws {
    let scratch = try Scratch("prl-write-mount")
    defer { scratch.remove() }
    let image = scratch.file("w.hds")
    try Qemu.create(image, format: "parallels", size: "8M", options: ["cluster_size=256k"])
    try Qemu.io(image, format: "parallels", ["write -P 0x3d 0 1M"])
    let mirror = try Qemu.rawFile(of: image, scratch: scratch)
    let mnt = try scratch.directory("mnt")
    let r = try run("timeout", ["60", vdiskfsBinary, image, mnt])
    defer {
      if mountTable().contains(mnt) { _ = try? run("fusermount3", ["-u", "-z", mnt], check: false) }
    }
    #expect(!r.stderr.contains("read-only"), "\(r.stderr)")
    let writes: [(UInt64, Int, UInt8)] = [
      (4096, 5000, 0x51), ((3 << 20) + 17, 70_000, 0x52), ((8 << 20) - 1, 1, 0x53),
    ]
    // Descriptors opened close-on-exec: a child another test spawns meanwhile must not hold
    // disk.raw open, or the unmount finds the mount busy.
    for path in [mnt + "/disk.raw", mirror] {
      let fd = open(path, O_RDWR | O_CLOEXEC)
      #expect(fd >= 0)
      for (offset, count, value) in writes {
        let data = [UInt8](repeating: value, count: count)
        #expect(data.withUnsafeBytes { pwrite(fd, $0.baseAddress, count, off_t(offset)) } == count)
      }
      #expect(fsync(fd) == 0)
      close(fd)
    }
    if (try? run("fusermount3", ["-u", mnt], check: false))?.status != 0 {
      _ = try run("fusermount3", ["-u", "-z", mnt], check: false)
    }
    // The daemon writes back and clears in_use as it exits.
    for _ in 0..<500 where mountTable().contains(mnt) || (try? field(image, at: 44, width: 4)) != 0 {
      usleep(20_000)
    }
    try Qemu.expectCleanAndIdentical(image, format: "parallels", to: mirror, "mount")
  }
}

/// Writers on several threads at once, over byte ranges that are disjoint but share clusters
/// (so allocations race for the same cluster and for the end of the data area), with flushes
/// running beside them: every byte lands, and qemu finds the image clean and identical.
@Suite struct ParallelsConcurrentWriteTests {
  @Test func concurrentWritersAndFlushes() throws {
    let scratch = try Scratch("prl-concurrent")
    defer { scratch.remove() }
    let image = scratch.file("c.hds")
    let size = 8 << 20
    try Qemu.create(image, format: "parallels", size: "\(size)", options: ["cluster_size=4k"])
    let chain = try openWritable(image, format: ParallelsDriver.self)
    let threads = 4
    let piece = 1536  // a 4 KiB cluster holds pieces of up to four threads
    let rounds = size / (threads * piece) / 3
    let failures = Failures()
    DispatchQueue.concurrentPerform(iterations: threads + 1) { t in
      do {
        if t == threads {
          for _ in 0..<40 {
            try chain.flush()
            usleep(500)
          }
          return
        }
        // Thread t writes piece t of every group, from the far end for odd threads.
        for r in 0..<rounds {
          let group = t % 2 == 0 ? r : rounds - 1 - r
          let offset = UInt64((group * threads + t) * piece)
          let data = [UInt8](repeating: UInt8(1 + (group * threads + t) % 251), count: piece)
          _ = try data.withUnsafeBytes { try chain.write($0, at: offset) }
        }
      } catch {
        failures.add("thread \(t): \(error)")
      }
    }
    #expect(failures.all.isEmpty, "\(failures.all)")
    try chain.flush()
    var mirror = [UInt8](repeating: 0, count: size)
    for index in 0..<(rounds * threads) {
      mirror.replaceSubrange(
        index * piece..<(index + 1) * piece, with: [UInt8](repeating: UInt8(1 + index % 251), count: piece))
    }
    #expect(try readAll(chain) == mirror)
    let raw = scratch.file("mirror.raw")
    try Data(mirror).write(to: URL(fileURLWithPath: raw))
    try Qemu.expectCleanAndIdentical(image, format: "parallels", to: raw, "concurrent writers")
    #expect(try field(image, at: 44, width: 4) == 0)
  }
}

/// Errors collected from several threads.
private final class Failures: @unchecked Sendable {
  private let lock = NSLock()
  private var list: [String] = []

  func add(_ text: String) { lock.withLock { list.append(text) } }
  var all: [String] { lock.withLock { list } }
}
