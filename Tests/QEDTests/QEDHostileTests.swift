import Foundation
import ImageFormats
import QED
import TestSupport
import Testing
import VDiskCore

/// Damaged and hostile QED images: one clear `VDiskError` naming the file and the fault.
@Suite struct QEDHostileTests {
  @Test func headerFieldsOutOfBounds() throws {
    let scratch = try Scratch("qed-hostile")
    defer { scratch.remove() }
    let image = scratch.file("h.qed")
    try Qemu.create(image, format: "qed", size: "4M")
    try Qemu.io(image, format: "qed", ["write -P 0x42 0 4M"])
    let original = try Data(contentsOf: URL(fileURLWithPath: image))
    let cases: [(UInt64, UInt64, Int, VDiskError.Kind, [String])] = [
      (4, 3 << 12, 4, .corrupt, ["cluster size 12288", "power of two"]),
      (4, 1 << 27, 4, .corrupt, ["cluster size 134217728"]),
      (4, 2048, 4, .corrupt, ["cluster size 2048"]),
      (4, 0, 4, .corrupt, ["cluster size 0"]),
      (8, 3, 4, .corrupt, ["table size 3"]),
      (8, 32, 4, .corrupt, ["table size 32"]),
      (8, 0, 4, .corrupt, ["table size 0"]),
      (12, 0, 4, .corrupt, ["header size of 0 clusters"]),
      (12, 0xFFFF_FFFF, 4, .corrupt, ["header size of 4294967295 clusters"]),
      (16, 0x10, 8, .unsupported, ["feature bits 0x10"]),
      (40, 1 << 40, 8, .corrupt, ["L1 table at 0x10000000000", "outside the file"]),
      (40, 0x10001, 8, .corrupt, ["L1 table at 0x10001", "not cluster-aligned"]),
      (40, 0, 8, .corrupt, ["L1 table at 0x0"]),
      (40, UInt64.max - 0xFFFF, 8, .corrupt, ["L1 table at 0xffffffffffff0000"]),
      (48, 1000, 8, .corrupt, ["image size 1000", "multiple of 512"]),
      (48, UInt64.max - 511, 8, .corrupt, ["image size 18446744073709551104", "exceeds"]),
    ]
    for (offset, value, width, kind, fragments) in cases {
      try original.write(to: URL(fileURLWithPath: image))
      try patchLE(image, at: offset, value, width: width)
      expectVDiskError(kind, [image] + fragments) { _ = try openChain(image, .init(format: QEDDriver.self)) }
    }
    // 64 MiB clusters and 16-cluster tables map 2^80 bytes; the size is still held to 2^63.
    try original.write(to: URL(fileURLWithPath: image))
    try patchLE(image, at: 4, 1 << 26, width: 4)
    try patchLE(image, at: 8, 16, width: 4)
    try patchLE(image, at: 48, 1 << 63, width: 8)
    expectVDiskError(.corrupt, [image, "image size 9223372036854775808", "2^63"]) {
      _ = try openChain(image, .init(format: QEDDriver.self))
    }
  }

  /// The backing file name must lie inside the header clusters, after the fixed fields.
  @Test func backingNameOutsideTheHeader() throws {
    let scratch = try Scratch("qed-hostile-name")
    defer { scratch.remove() }
    let top = scratch.file("t.qed")
    try Qemu.create(scratch.file("b.raw"), format: "raw", size: "1M")
    try Qemu.create(top, format: "qed", size: "1M", backing: "b.raw", backingFormat: "raw")
    let original = try Data(contentsOf: URL(fileURLWithPath: top))
    let cases: [(UInt64, UInt64)] = [
      (65530, 5), (64, 65473), (0, 5), (20, 5), (64, 0), (0xFFFF_FFFF, 0xFFFF_FFFF), (64, 2000),
    ]
    for (offset, size) in cases {
      try original.write(to: URL(fileURLWithPath: top))
      try patchLE(top, at: 56, offset, width: 4)
      try patchLE(top, at: 60, size, width: 4)
      expectVDiskError(.corrupt, [top, "backing file name"]) { _ = try openChain(top) }
    }
  }

  /// L1 and L2 entries that point outside the file or off a cluster boundary fail the read that
  /// meets them, naming the entry; other reads go on.
  @Test func tableEntriesOutOfBounds() throws {
    let scratch = try Scratch("qed-hostile-tables")
    defer { scratch.remove() }
    let image = scratch.file("t.qed")
    // 4 KiB clusters, two-cluster tables: an L2 table maps 4 MiB.
    try Qemu.create(image, format: "qed", size: "12M", options: ["cluster_size=4096", "table_size=2"])
    try Qemu.io(image, format: "qed", ["write -P 0x42 0 12M"])
    let l1 = try u64LE(image, at: 40)
    let l2 = try u64LE(image, at: l1)
    let original = try Data(contentsOf: URL(fileURLWithPath: image))
    let cases: [(UInt64, UInt64, UInt64, [String])] = [
      (l1 + 8, 1 << 45, 4 << 20, ["L1 entry 1", "L2 table at 0x200000000000"]),
      (l1 + 8, 4097, 4 << 20, ["L1 entry 1", "not cluster-aligned"]),
      (l1 + 8, 0, 4 << 20, []),
      (l2 + 16, 1 << 45, 2 * 4096, ["L2 entry 2", "data cluster at 0x200000000000"]),
      (l2 + 16, 4096 + 512, 2 * 4096, ["L2 entry 2", "not cluster-aligned"]),
      (l2 + 16, 0, 2 * 4096, []),
    ]
    for (at, value, readAt, fragments) in cases {
      try original.write(to: URL(fileURLWithPath: image))
      try patchLE(image, at: at, value, width: 8)
      let chain = try openChain(image)
      #expect(try chain.read(at: 8 << 20, count: 4096).allSatisfy { $0 == 0x42 })
      if fragments.isEmpty {
        // An unallocated entry reads as zeros.
        #expect(try chain.read(at: readAt, count: 4096).allSatisfy { $0 == 0 })
        continue
      }
      expectVDiskError(.corrupt, [image] + fragments) { _ = try chain.read(at: readAt, count: 4096) }
      // The writer refuses such an image: the mount falls back to read-only.
      expectVDiskError(.readOnly, [image, "refusing to write"]) {
        _ = try openWritable(image, format: QEDDriver.self)
      }
    }
  }

  /// Two L2 entries naming one data cluster, or a data cluster inside the L1 table: readable,
  /// never written.
  @Test func sharedClustersAreNotWritten() throws {
    let scratch = try Scratch("qed-hostile-shared")
    defer { scratch.remove() }
    let image = scratch.file("s.qed")
    try Qemu.create(image, format: "qed", size: "4M", options: ["cluster_size=4096", "table_size=2"])
    try Qemu.io(image, format: "qed", ["write -P 0x42 0 64k"])
    let l1 = try u64LE(image, at: 40)
    let l2 = try u64LE(image, at: l1)
    let first = try u64LE(image, at: l2)
    let original = try Data(contentsOf: URL(fileURLWithPath: image))
    for (at, value) in [(l2 + 8, first), (l2 + 8, l1), (l2 + 8, l2 + 4096)] {
      try original.write(to: URL(fileURLWithPath: image))
      try patchLE(image, at: at, value, width: 8)
      _ = try readAll(try openChain(image))
      expectVDiskError(.readOnly, [image, "used elsewhere too", "refusing to write"]) {
        _ = try openWritable(image, format: QEDDriver.self)
      }
    }
  }

  /// a.qed → b.qed → a.qed, and a.qed → a.qed.
  @Test func backingLoops() throws {
    let scratch = try Scratch("qed-loop")
    defer { scratch.remove() }
    let a = scratch.file("a.qed")
    let b = scratch.file("b.qed")
    try Qemu.create(b, format: "qed", size: "1M")
    try Qemu.create(a, format: "qed", size: "1M", backing: "b.qed", backingFormat: "qed")
    try Qemu.img("rebase", "-u", "-b", "a.qed", "-F", "qed", b)
    expectVDiskError(.corrupt, [a, "backing chain loops: \(a) → \(b) → \(a)"]) { _ = try openChain(a) }
    try Qemu.img("rebase", "-u", "-b", "a.qed", "-F", "qed", a)
    expectVDiskError(.corrupt, ["backing chain loops: \(a) → \(a)"]) { _ = try openChain(a) }
  }

  @Test func randomHeaderCorruptionNeverCrashes() throws {
    let scratch = try Scratch("qed-hostile-fuzz")
    defer { scratch.remove() }
    let image = scratch.file("f.qed")
    try Qemu.create(scratch.file("b.raw"), format: "raw", size: "3M")
    try Qemu.create(
      image, format: "qed", size: "3M", options: ["cluster_size=4096", "table_size=2"], backing: "b.raw",
      backingFormat: "raw")
    try Qemu.io(image, format: "qed", ["write -P 0x42 0 3M"])
    let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: image)))
    let l1 = Int(try u64LE(image, at: 40))
    // The header, the L1 table and the first L2 table.
    let refused = try openDamagedCopies(
      of: original, at: image, format: QEDDriver.self, folder: scratch.file(""), seed: 7
    ) { round, rng in
      round % 2 == 0 ? Int(rng.next() % 80) : l1 + Int(rng.next() % 8192)
    }
    #expect(refused > 0)
  }
}
