import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore

@testable import QCOW2

/// Growth of qcow2 structures under writes: the refcount table, the L1 table (resize), and
/// subcluster-granular allocation with extended L2 entries.
@Suite struct WriteStructureTests {
  /// Ends a test on an image: clean `qemu-img check`, identical to the mirror.
  static func expectConsistent(_ image: String, mirror: [UInt8], scratch: Scratch) throws {
    let report = try Qemu.check(image, format: "qcow2")
    #expect(report.isClean, "\(report)")
    let raw = scratch.file("mirror.raw")
    try Data(mirror).write(to: URL(fileURLWithPath: raw))
    let (identical, output) = try Qemu.identical(image, format: "qcow2", to: raw)
    #expect(identical, "\(output)")
  }

  @Test(arguments: [0, 4, 6])
  func refcountTableGrowsWithTinyClusters(refcountOrder: Int) throws {
    let scratch = try Scratch("qwrite-reftable")
    defer { scratch.remove() }
    let image = scratch.file("t.qcow2")
    // 512 B clusters: one refcount table cluster names 64 blocks; with 64-bit refcounts a block
    // covers 64 clusters, so 4 MiB of data needs several table clusters.
    try Qemu.create(image, size: "4M", options: ["cluster_size=512", "refcount_bits=\(1 << refcountOrder)"])
    let before = try field(image, at: 48, width: 8)
    var mirror = [UInt8](repeating: 0, count: 4 << 20)
    do {
      let disk = MirroredDisk(chain: try openWritable(image), mirror: mirror)
      var offset: UInt64 = 0
      while offset < disk.size {
        try disk.write(at: offset, count: 96 * 1024 + 7)
        offset += 96 * 1024 + 7 + 4096
        if offset + 100_000 > disk.size { break }
      }
      try disk.chain.flush()
      #expect(try disk.verifyAll() == nil)
      mirror = disk.mirror
    }
    if refcountOrder == 6 {
      #expect(try field(image, at: 48, width: 8) != before, "refcount table did not move")
      #expect(try field(image, at: 56, width: 4) > 1)
    }
    try Self.expectConsistent(image, mirror: mirror, scratch: scratch)
  }

  @Test func resizeGrowsAndMovesTheL1Table() throws {
    let scratch = try Scratch("qwrite-resize")
    defer { scratch.remove() }
    let image = scratch.file("r.qcow2")
    // 512 B clusters: an L2 table covers 32 KiB, so 16 MiB needs 512 L1 entries (8 clusters).
    try Qemu.create(image, size: "1M", options: ["cluster_size=512"])
    try Qemu.io(image, ["write -P 0x11 0 300k"])
    let oldL1 = try field(image, at: 40, width: 8)
    var mirror = try Qemu.rawContent(of: image, scratch: scratch)
    do {
      let chain = try openWritable(image)
      let layer = try chain.writableTop
      expectVDiskError(.invalidArgument, ["allowShrink"]) {
        try layer.resize(to: 512 << 10, allowShrink: false)
      }
      expectVDiskError(.invalidArgument, ["in use"]) { try layer.resize(to: 128 << 10, allowShrink: true) }
      try layer.resize(to: 16 << 20, allowShrink: false)
      #expect(chain.virtualSize == 16 << 20)
      mirror += [UInt8](repeating: 0, count: (16 << 20) - mirror.count)
      let disk = MirroredDisk(chain: chain, mirror: mirror)
      try disk.write(at: (15 << 20) - 70_000, count: 70_000)
      try disk.write(at: 900_000, count: 300_000)
      try disk.discard(at: 0, count: 4096, mode: .punchHole)
      #expect(try disk.verifyAll() == nil)
      // Shrinking is allowed when nothing lies past the new end.
      try layer.resize(to: 15 << 20, allowShrink: true)
      disk.mirror.removeLast(1 << 20)
      try disk.chain.flush()
      mirror = disk.mirror
    }
    #expect(try field(image, at: 40, width: 8) != oldL1, "L1 table did not move")
    #expect(try field(image, at: 36, width: 4) >= 480)
    #expect(try field(image, at: 24, width: 8) == 15 << 20)
    try Self.expectConsistent(image, mirror: mirror, scratch: scratch)
  }

  @Test func extendedL2AllocatesOnlyTouchedSubclusters() throws {
    let scratch = try Scratch("qwrite-subcluster")
    defer { scratch.remove() }
    let base = scratch.file("base.raw")
    let image = scratch.file("top.qcow2")
    try Qemu.create(base, format: "raw", size: "1M")
    try Qemu.io(base, format: "raw", ["write -P 0x5a 0 1M"])
    try Qemu.create(image, size: "1M", options: ["extended_l2=on"], backing: "base.raw", backingFormat: "raw")
    var mirror = try Qemu.rawContent(of: image, scratch: scratch)
    do {
      let chain = try openWritable(image)
      let layer = try chain.writableTop
      // 64 KiB clusters, 2 KiB subclusters: an aligned 4 KiB write needs no fill at all.
      let aligned = try layer.prepareWrite(at: 65536 + 8192, length: 4096)
      #expect(aligned.bytesWritten(65536 + 8192, 4096) == 4096)
      layer.abortWrite(aligned)
      // An unaligned 1000-byte write fills only the rest of its one subcluster.
      let unaligned = try layer.prepareWrite(at: 65536 + 8192 + 100, length: 1000)
      #expect(unaligned.bytesWritten(65536 + 8192 + 100, 1000) == 2048)
      layer.abortWrite(unaligned)
      let disk = MirroredDisk(chain: chain, mirror: mirror)
      try disk.write(at: 65536 + 8192 + 100, count: 1000)
      try disk.write(at: 3 * 65536 + 2048, count: 4096)
      #expect(try disk.verifyAll() == nil)
      try chain.flush()
      mirror = disk.mirror
    }
    // Only the touched subclusters are data in the top layer.
    let top = try Qemu.map(image).filter { $0.depth == 0 && $0.data }
    #expect(top.map(\.length).reduce(0, +) == 2048 + 4096, "\(top)")
    try Self.expectConsistent(image, mirror: mirror, scratch: scratch)
  }

  @Test func inPlaceWritesCopyNothing() throws {
    let scratch = try Scratch("qwrite-inplace")
    defer { scratch.remove() }
    let image = scratch.file("full.qcow2")
    try Qemu.create(image, size: "1M")
    try Qemu.io(image, ["write -P 0x33 0 1M", "write -z 512k 64k"])
    var mirror = try Qemu.rawContent(of: image, scratch: scratch)
    do {
      let chain = try openWritable(image)
      let layer = try chain.writableTop
      // An allocated cluster with refcount 1 is written in place: the 4 KiB alone, no fill.
      let inPlace = try layer.prepareWrite(at: 65536 + 100, length: 4096)
      #expect(inPlace.targets.count == 1 && inPlace.bytesWritten(65536 + 100, 4096) == 4096)
      layer.abortWrite(inPlace)
      // A zero cluster is filled whole (its other bytes must read as zeros).
      let zero = try layer.prepareWrite(at: (512 << 10) + 100, length: 4096)
      #expect(zero.bytesWritten((512 << 10) + 100, 4096) == 65536)
      layer.abortWrite(zero)
      let disk = MirroredDisk(chain: chain, mirror: mirror)
      try disk.write(at: 65536 + 100, count: 4096)
      try disk.write(at: (512 << 10) + 100, count: 4096)
      #expect(try disk.verifyAll() == nil)
      try chain.flush()
      mirror = disk.mirror
    }
    try Self.expectConsistent(image, mirror: mirror, scratch: scratch)
  }

  @Test func refcountCodecRoundTripsEveryWidth() {
    for order in UInt32(0)...6 {
      let codec = RefcountCodec(order: order)
      var block = [UInt64](repeating: 0, count: 64)  // 512 bytes, as the writer caches blocks
      let entries = Int(codec.entries(clusterSize: 512))
      for i in 0..<entries { codec.set(&block, i, UInt64(i * 7 + 3) & codec.maxValue) }
      for i in 0..<entries where codec.get(block, i) != UInt64(i * 7 + 3) & codec.maxValue {
        Issue.record("order \(order): entry \(i) reads \(codec.get(block, i))")
        break
      }
    }
    // Sub-byte entries count from the least significant bit (qcow2 spec).
    var block = [UInt64](repeating: 0, count: 1)
    RefcountCodec(order: 0).set(&block, 0, 1)
    #expect(block.withUnsafeBytes { $0[0] } == 1)
    RefcountCodec(order: 1).set(&block, 1, 3)
    #expect(block.withUnsafeBytes { $0[0] } == 0b1101)
    // Wider entries are big-endian in the file's byte order.
    RefcountCodec(order: 4).set(&block, 1, 0x0102)
    #expect(block.withUnsafeBytes { [$0[2], $0[3]] } == [1, 2])
  }
}

extension PreparedWrite {
  /// Bytes the engine writes for this plan of a write of `length` bytes at `offset`: the write's
  /// own bytes plus every fill range.
  func bytesWritten(_ offset: UInt64, _ length: UInt64) -> Int {
    targets.reduce(0) { sum, t in
      sum + (offset..<offset + length).clamped(to: t.guest).count + t.fill.reduce(0) { $0 + $1.count }
    }
  }
}
