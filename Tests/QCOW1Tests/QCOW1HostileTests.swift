import Foundation
import ImageFormats
import QCOW1
import TestSupport
import Testing
import VDiskCore

/// Damaged, hostile and encrypted qcow v1 images: one clear `VDiskError` naming the file and the
/// fault.
@Suite struct QCOW1HostileTests {
  @Test func encryptedImagesAreRefused() throws {
    let scratch = try Scratch("qcow1-aes")
    defer { scratch.remove() }
    let image = scratch.file("e.qcow")
    try Qemu.img(
      "create", "-q", "--object", "secret,id=sec0,data=123456", "-f", "qcow", "-o",
      "encrypt.format=aes,encrypt.key-secret=sec0", image, "1M")
    expectVDiskError(.unsupported, [image, "encrypted images are not supported"]) { _ = try openChain(image) }
  }

  @Test func headerFieldsOutOfBounds() throws {
    let scratch = try Scratch("qcow1-hostile")
    defer { scratch.remove() }
    let image = scratch.file("h.qcow")
    try Qemu.create(scratch.file("b.raw"), format: "raw", size: "4M")
    try Qemu.create(image, format: "qcow", size: "4M", backing: "b.raw", backingFormat: "raw")
    try Qemu.io(image, format: "qcow", ["write -P 0x42 0 4M"])
    let original = try Data(contentsOf: URL(fileURLWithPath: image))
    let cases: [(UInt64, UInt64, Int, VDiskError.Kind, [String])] = [
      (4, 7, 4, .unsupported, ["qcow version 7"]),
      (4, 2, 4, .unsupported, ["qcow version 2"]),
      (24, 1, 8, .corrupt, ["image size 1 is too small"]),
      (24, UInt64.max - 10, 8, .corrupt, ["image size 18446744073709551605 is too large"]),
      (24, 1 << 62, 8, .corrupt, ["image size 4611686018427387904 is too large"]),
      (24, 1 << 44, 8, .corrupt, ["L1 table", "outside the file"]),
      (32, 8, 1, .corrupt, ["cluster bits 8"]),
      (32, 17, 1, .corrupt, ["cluster bits 17"]),
      (33, 5, 1, .corrupt, ["L2 bits 5"]),
      (33, 14, 1, .corrupt, ["L2 bits 14"]),
      (36, 2, 4, .corrupt, ["invalid qcow encryption method 2"]),
      (40, 1 << 40, 8, .corrupt, ["L1 table at 0x10000000000", "outside the file"]),
      (40, UInt64.max - 3, 8, .corrupt, ["L1 table at 0xfffffffffffffffc"]),
      (8, 1 << 40, 8, .corrupt, ["backing file name at 0x10000000000"]),
      (16, 2000, 4, .corrupt, ["backing file name", "longer than 1023"]),
      (8, UInt64.max, 8, .corrupt, ["backing file name at 0xffffffffffffffff"]),
    ]
    for (offset, value, width, kind, fragments) in cases {
      try original.write(to: URL(fileURLWithPath: image))
      try patchBE(image, at: offset, value, width: width)
      expectVDiskError(kind, [image] + fragments) {
        _ = try openChain(image, .init(format: QCOW1Driver.self))
      }
    }
  }

  /// L1 and L2 entries outside the file, and compressed clusters that do not inflate, fail the
  /// read that meets them, naming the place; other reads go on.
  @Test func tableEntriesOutOfBounds() throws {
    let scratch = try Scratch("qcow1-hostile-tables")
    defer { scratch.remove() }
    let image = scratch.file("t.qcow")
    // 4 KiB clusters, 512-entry tables: an L2 table maps 2 MiB.
    try Qemu.create(image, format: "qcow", size: "6M")
    try Qemu.io(image, format: "qcow", ["write -P 0x42 0 6M"])
    let l1 = try u64BE(image, at: 40)
    let l2 = try u64BE(image, at: l1)
    let original = try Data(contentsOf: URL(fileURLWithPath: image))
    let cluster: UInt64 = 4096
    let cases: [(UInt64, UInt64, UInt64, [String])] = [
      (l1 + 8, 1 << 45, 2 << 20, ["L1 entry 1", "L2 table at 0x200000000000"]),
      (l1 + 8, UInt64.max, 2 << 20, ["L1 entry 1"]),
      (
        l2 + 16, 1 << 63 | 1 << 55 | 1 << 45, 2 * cluster,
        ["L2 entry 2", "compressed cluster", "outside the file"]
      ),
      (l2 + 16, 1 << 63 | 0x1FF << 51 | l1, 2 * cluster, ["compressed cluster at", "does not inflate"]),
      (l2 + 16, (1 << 63) - 100, 2 * cluster, ["L2 entry 2", "past any file"]),
    ]
    for (at, value, readAt, fragments) in cases {
      try original.write(to: URL(fileURLWithPath: image))
      try patchBE(image, at: at, value, width: 8)
      let chain = try openChain(image)
      #expect(try chain.read(at: 4 << 20, count: 4096).allSatisfy { $0 == 0x42 })
      expectVDiskError(.corrupt, [image] + fragments) { _ = try chain.read(at: readAt, count: 4096) }
    }
    // A data cluster past the end of the file reads as zeros, as qemu reads it.
    try original.write(to: URL(fileURLWithPath: image))
    try patchBE(image, at: l2 + 16, 1 << 40, width: 8)
    #expect(try openChain(image).read(at: 2 * cluster, count: 4096).allSatisfy { $0 == 0 })
  }

  /// a.qcow → b.qcow → a.qcow.
  @Test func backingLoops() throws {
    let scratch = try Scratch("qcow1-loop")
    defer { scratch.remove() }
    let a = scratch.file("a.qcow")
    let b = scratch.file("b.qcow")
    try Qemu.create(b, format: "qcow", size: "1M")
    try Qemu.create(a, format: "qcow", size: "1M", backing: "b.qcow", backingFormat: "qcow")
    // b names a.qcow: its name field points at a copy of "a.qcow" appended to the file.
    let end = try FileManager.default.attributesOfItem(atPath: b)[.size] as? UInt64 ?? 0
    try patch(b, at: end, bytes: Array("a.qcow".utf8))
    try patchBE(b, at: 8, end, width: 8)
    try patchBE(b, at: 16, 6, width: 4)
    expectVDiskError(.corrupt, [a, "backing chain loops: \(a) → \(b) → \(a)"]) { _ = try openChain(a) }
  }

  @Test func randomCorruptionNeverCrashes() throws {
    let scratch = try Scratch("qcow1-hostile-fuzz")
    defer { scratch.remove() }
    let image = scratch.file("f.qcow")
    let raw = scratch.file("r.raw")
    try Qemu.create(raw, format: "raw", size: "3M")
    try Qemu.io(raw, format: "raw", ["write -P 0x42 0 1M", "write -P 0x43 2M 512k"])
    try convertCompressed(raw, sourceFormat: "raw", to: image)
    let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: image)))
    let l1 = Int(try u64BE(image, at: 40))
    // The header, the L1 table and what follows it (L2 tables, compressed data).
    let refused = try openDamagedCopies(
      of: original, at: image, format: QCOW1Driver.self, folder: scratch.file(""), seed: 11
    ) { round, rng in
      round % 3 == 0 ? Int(rng.next() % 48) : l1 + Int(rng.next() % UInt64(min(8192, original.count - l1)))
    }
    #expect(refused > 0)
  }
}
