import Foundation
import ImageFormats
import QCOW2
import TestSupport
import Testing
import VDiskCore

/// Hostile snapshot tables: a clear `VDiskError`, never a crash, memory bounded by the checks.
@Suite struct SnapshotHostileTests {
  /// A 4 MiB image with one cluster of data; returns it, its L1 offset and an opener.
  func image(_ scratch: Scratch) throws -> (path: String, l1: UInt64) {
    let image = scratch.file("hostile.qcow2")
    try Qemu.create(image, size: "4M")
    try Qemu.io(image, ["write -P 0x11 0 64k"])
    return (image, try field(image, at: 40, width: 8))
  }

  /// Both `snapshots()` and `snapshotLayer(id: "1")` fail with `.corrupt` naming `fragment`.
  func expectCorrupt(_ path: String, _ fragment: String, sourceLocation: SourceLocation = #_sourceLocation)
    throws
  {
    let (_, layer) = try openQCOW2(path)
    expectVDiskError(.corrupt, [fragment], sourceLocation: sourceLocation) { _ = try layer.snapshots() }
    expectVDiskError(.corrupt, [fragment], sourceLocation: sourceLocation) {
      _ = try layer.snapshotLayer(id: "1")
    }
    _ = try layer.snapshotGeneration()
  }

  @Test func hugeSnapshotCountAfterOpen() throws {
    let scratch = try Scratch("snap-hostile-count")
    defer { scratch.remove() }
    let (path, l1) = try image(scratch)
    try installTable(path, [CraftedSnapshot(l1Offset: l1, l1Size: 1)])
    let (_, layer) = try openQCOW2(path)
    #expect(try layer.snapshots().count == 1)
    try patch(path, at: 60, 0xFFFF_FFFF, width: 4)
    expectVDiskError(.corrupt, ["nb_snapshots 4294967295 exceeds 65536"]) { _ = try layer.snapshots() }
    // Opened now, the header itself is refused.
    expectVDiskError(.corrupt, ["nb_snapshots"]) { _ = try openChain(path) }
  }

  @Test func maximalCountOverATableOfOneEntry() throws {
    let scratch = try Scratch("snap-hostile-65536")
    defer { scratch.remove() }
    let (path, l1) = try image(scratch)
    try installTable(path, [CraftedSnapshot(l1Offset: l1, l1Size: 1)], count: 65536)
    try expectCorrupt(path, "beyond end of file")
  }

  @Test func tablePastEndOfFile() throws {
    let scratch = try Scratch("snap-hostile-eof")
    defer { scratch.remove() }
    let (path, l1) = try image(scratch)
    try installTable(path, [CraftedSnapshot(l1Offset: l1, l1Size: 1)])
    try patch(path, at: 64, 1 << 40, width: 8)
    try expectCorrupt(path, "beyond end of file")
    try patch(path, at: 64, 0xFFFF_FFFF_FFFF_0000, width: 8)
    try expectCorrupt(path, "snapshot table offset 0xffffffffffff0000 is invalid")
    try patch(path, at: 64, 65536 + 512, width: 8)
    // The header parser refuses an unaligned table at open.
    expectVDiskError(.corrupt, ["snapshots offset"]) { _ = try openChain(path) }
  }

  @Test func nameLengthPastTheTable() throws {
    let scratch = try Scratch("snap-hostile-name")
    defer { scratch.remove() }
    let (path, l1) = try image(scratch)
    try installTable(path, [CraftedSnapshot(l1Offset: l1, l1Size: 1, nameLength: 0xFFFF)])
    try expectCorrupt(path, "ID and name of snapshot table entry 0")
    try installTable(path, [CraftedSnapshot(l1Offset: l1, l1Size: 1, idLength: 0xFFFF, nameLength: 0xFFFF)])
    try expectCorrupt(path, "ID and name of snapshot table entry 0")
  }

  @Test func absurdExtraDataSize() throws {
    let scratch = try Scratch("snap-hostile-extra")
    defer { scratch.remove() }
    let (path, l1) = try image(scratch)
    try installTable(path, [CraftedSnapshot(l1Offset: l1, l1Size: 1, extraSize: 0xFFFF_FFFF)])
    try expectCorrupt(path, "4294967295 bytes of extra data")
    try installTable(path, [CraftedSnapshot(l1Offset: l1, l1Size: 1, extraSize: 1025)])
    try expectCorrupt(path, "1025 bytes of extra data")
  }

  @Test func snapshotL1Tables() throws {
    let scratch = try Scratch("snap-hostile-l1")
    defer { scratch.remove() }
    let (path, l1) = try image(scratch)
    try installTable(path, [CraftedSnapshot(l1Offset: 1 << 40, l1Size: 1)])
    try expectCorrupt(path, "lies beyond end of file")
    try installTable(path, [CraftedSnapshot(l1Offset: 0xFFFF_FFFF_FFFF_0000, l1Size: 2)])
    try expectCorrupt(path, "lies beyond end of file")
    try installTable(path, [CraftedSnapshot(l1Offset: l1 + 512, l1Size: 1)])
    try expectCorrupt(path, "is not cluster-aligned")
    try installTable(path, [CraftedSnapshot(l1Offset: l1, l1Size: 0xFFFF_FFFF)])
    try expectCorrupt(path, "larger than 64 MiB")
    try installTable(path, [CraftedSnapshot(l1Offset: l1, l1Size: 0)])
    try expectCorrupt(path, "too small for virtual size")
    try installTable(path, [CraftedSnapshot(l1Offset: l1, l1Size: 1, diskSize: 1 << 63)])
    try expectCorrupt(path, "too large")
    try installTable(path, [CraftedSnapshot(l1Offset: l1, l1Size: 1, diskSize: 1 << 40)])
    try expectCorrupt(path, "too small for virtual size")
  }

  /// A snapshot L1 entry naming an L2 table past end-of-file: the view opens, reading fails.
  @Test func snapshotL2PastEndOfFile() throws {
    let scratch = try Scratch("snap-hostile-l2")
    defer { scratch.remove() }
    let (path, _) = try image(scratch)
    let table = try installTable(path, [CraftedSnapshot(l1Offset: 0, l1Size: 1)])
    let l1 = table + 65536
    try patch(path, at: table, l1, width: 8)
    try patch(path, at: l1, (1 << 40) | (1 << 63), width: 8)
    let (_, layer) = try openQCOW2(path)
    let view = try layer.snapshotLayer(id: "1")
    expectVDiskError(.corrupt, ["L2 table", "beyond end of file"]) {
      _ = try LayerChain(top: view).read(at: 0, count: 512)
    }
  }

  /// Random damage to a real table: every call either works or throws `VDiskError`.
  @Test func randomlyDamagedTables() throws {
    let scratch = try Scratch("snap-hostile-fuzz")
    defer { scratch.remove() }
    let fixture = try makeSnapshotImage(.plain, in: scratch)
    let pristine = try Data(contentsOf: URL(fileURLWithPath: fixture.image))
    let offset = Int(try field(fixture.image, at: 64, width: 8))
    var rng = SplitMix64(seed: 42)
    var failures = 0
    for _ in 0..<150 {
      try pristine.write(to: URL(fileURLWithPath: fixture.image))
      for _ in 0..<(1 + rng.next() % 4) {
        let at = UInt64(offset) + rng.next() % 256
        try patch(fixture.image, at: at, bytes: [UInt8(truncatingIfNeeded: rng.next())])
      }
      let (_, layer) = try openQCOW2(fixture.image)
      do {
        _ = try layer.snapshotGeneration()
        for info in try layer.snapshots() {
          let chain = LayerChain(top: try layer.snapshotLayer(id: info.id))
          _ = try chain.read(at: 0, count: 1 << 20)
        }
      } catch is VDiskError {
        failures += 1
      }
    }
    #expect(failures > 0)
  }
}
