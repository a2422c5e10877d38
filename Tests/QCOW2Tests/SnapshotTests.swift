import Foundation
import ImageFormats
import QCOW2
import TestSupport
import Testing
import VDiskCore

/// Internal snapshots (`SnapshotSource`): listing and content against qemu-img.
@Suite struct SnapshotTests {
  @Test(arguments: SnapshotScenario.allCases)
  func everySnapshotReadsAsQemuShowsIt(scenario: SnapshotScenario) throws {
    let scratch = try Scratch("snap-\(scenario.rawValue)")
    defer { scratch.remove() }
    let fixture = try makeSnapshotImage(scenario, in: scratch)
    try expectMatchesQemu(fixture.image, scratch: scratch)
    let (_, layer) = try openQCOW2(fixture.image)

    // The listing equals qemu-img's, field by field (icount included).
    let table = try layer.snapshotTable()
    #expect(table.map(QemuSnapshot.init) == (try qemuSnapshots(fixture.image)))
    #expect(table.map(\.name) == fixture.names)
    let infos = try layer.snapshots()
    #expect(infos.map(\.id) == ["1", "2", "3"])
    #expect(infos.map(\.name) == fixture.names)

    for (info, name) in zip(infos, fixture.names) {
      let view = try layer.snapshotLayer(id: info.id)
      #expect(view.formatName == "qcow2")
      #expect(view.virtualSize == info.virtualSize)
      #expect(view.backing === layer.backing)
      let actual = try content(of: view)
      let (copy, expected) = try qemuSnapshotContent(fixture.image, name: name, scratch: scratch)
      #expect(actual.count == expected.count, "\(name)")
      #expect(
        firstDifference(actual, expected) == nil,
        "\(name): first difference at \(firstDifference(actual, expected) ?? -1)")
      // qemu-img convert -l reads the snapshot at the image's current size.
      let converted = try qemuConvertSnapshot(fixture.image, name: name, scratch: scratch)
      let common = min(converted.count, actual.count)
      #expect(firstDifference(Array(actual[0..<common]), Array(converted[0..<common])) == nil, "\(name)")
      #expect(converted[common...].allSatisfy { $0 == 0 })
      // qemu-img snapshot -a made the snapshot's L1 table the active one: same allocation map.
      try expectSameMap(LayerChain(top: view), try openChain(copy), name)
    }
    if scenario == .resized {
      #expect(infos.map(\.virtualSize) == [4 << 20, 6 << 20, 6 << 20])
      #expect(layer.virtualSize == 3 << 20)
    }
  }

  @Test func unknownSnapshotIsNotFound() throws {
    let scratch = try Scratch("snap-unknown")
    defer { scratch.remove() }
    let fixture = try makeSnapshotImage(.plain, in: scratch)
    let (_, layer) = try openQCOW2(fixture.image)
    expectVDiskError(.notFound, ["no snapshot with ID \"s1\""]) { _ = try layer.snapshotLayer(id: "s1") }
    let empty = scratch.file("empty.qcow2")
    try Qemu.create(empty, size: "1M")
    let (_, plain) = try openQCOW2(empty)
    #expect(try plain.snapshots().isEmpty)
    expectVDiskError(.notFound, ["no snapshot"]) { _ = try plain.snapshotLayer(id: "1") }
  }

  /// Writing the active layer (copy-on-write of shared L2 tables and clusters) never changes what
  /// a snapshot view shows, neither an open view (its L2 tables shared in the metadata cache) nor
  /// a new one; QEMU agrees afterwards and finds the image clean.
  @Test(arguments: [SnapshotScenario.plain, .compressed, .extendedL2, .overBacking])
  func writingTheActiveLayerLeavesSnapshotsAlone(scenario: SnapshotScenario) throws {
    let scratch = try Scratch("snap-write-\(scenario.rawValue)")
    defer { scratch.remove() }
    let fixture = try makeSnapshotImage(scenario, in: scratch)
    var before: [[UInt8]] = []
    do {
      let (chain, layer) = try openQCOW2(fixture.image, OpenOptions(writable: true))
      let views = try ["1", "2", "3"].map { try layer.snapshotLayer(id: $0) }
      before = try views.map(content(of:))
      var rng = SplitMix64(seed: 7)
      for i in 0..<40 {
        let length = Int(1 + rng.next() % (192 << 10))
        let offset = rng.next() % (chain.virtualSize - UInt64(length))
        let bytes = [UInt8](repeating: UInt8(0x80 + i), count: length)
        _ = try bytes.withUnsafeBytes { try chain.write($0, at: offset) }
      }
      try chain.discard(at: 2 << 20, length: 256 << 10, mode: .punchHole)
      try chain.flush()
      for (view, old) in zip(views, before) {
        #expect(firstDifference(try content(of: view), old) == nil)
      }
      for (id, old) in zip(["1", "2", "3"], before) {
        #expect(firstDifference(try content(of: try layer.snapshotLayer(id: id)), old) == nil)
      }
    }
    let check = try Qemu.check(fixture.image, format: "qcow2")
    #expect(check.isClean, "\(check)")
    for (name, old) in zip(fixture.names, before) {
      let (_, expected) = try qemuSnapshotContent(fixture.image, name: name, scratch: scratch)
      #expect(firstDifference(expected, old) == nil, "\(name)")
    }
  }

  /// QEMU creates and deletes snapshots while the image is open read-only here.
  @Test func generationFollowsSnapshotsMadeByAnotherProcess() throws {
    let scratch = try Scratch("snap-generation")
    defer { scratch.remove() }
    let fixture = try makeSnapshotImage(.plain, in: scratch)
    let (_, layer) = try openQCOW2(fixture.image, OpenOptions(lock: false))
    let g0 = try layer.snapshotGeneration()
    #expect(try layer.snapshotGeneration() == g0)
    let s1 = try layer.snapshotLayer(id: "1")
    let s1Content = try content(of: s1)

    // Guest writes leave the table alone.
    try Qemu.io(fixture.image, ["write -P 0x77 0 1M"])
    #expect(try layer.snapshotGeneration() == g0)

    try Qemu.img("snapshot", "-c", "late", fixture.image)
    let g1 = try layer.snapshotGeneration()
    #expect(g1 != g0)
    let listed = try layer.snapshots()
    #expect(listed.map(\.name) == fixture.names + ["late"])
    let late = try #require(listed.last)
    let (_, expected) = try qemuSnapshotContent(fixture.image, name: "late", scratch: scratch)
    #expect(firstDifference(try content(of: try layer.snapshotLayer(id: late.id)), expected) == nil)
    #expect(firstDifference(try content(of: s1), s1Content) == nil)

    try Qemu.img("snapshot", "-d", "s1", fixture.image)
    let g2 = try layer.snapshotGeneration()
    #expect(g2 != g1 && g2 != g0)
    #expect(try layer.snapshots().map(\.name) == ["second snapshot", "s3", "late"])
    expectVDiskError(.notFound, ["no snapshot"]) { _ = try layer.snapshotLayer(id: "1") }
    // Deleting and creating again moves the table: a new generation, even with the old count.
    try Qemu.img("snapshot", "-c", "again", fixture.image)
    try Qemu.img("snapshot", "-d", "again", fixture.image)
    try Qemu.img("snapshot", "-c", "again2", fixture.image)
    #expect(try layer.snapshotGeneration() != g2)
  }

  /// An image with many snapshots: listed with a few reads, not one per entry.
  @Test func sixtyFiveThousandEntries() throws {
    let scratch = try Scratch("snap-many")
    defer { scratch.remove() }
    let image = scratch.file("many.qcow2")
    try Qemu.create(image, size: "4M")
    try Qemu.io(image, ["write -P 0x11 0 64k"])
    let l1 = try field(image, at: 40, width: 8)
    let entries = (1...65536).map { CraftedSnapshot(l1Offset: l1, l1Size: 1, id: "\($0)", name: "n\($0)") }
    try installTable(image, entries)
    let (_, layer) = try openQCOW2(image)
    let clock = ContinuousClock()
    let started = clock.now
    let listed = try layer.snapshots()
    #expect(clock.now - started < timeBudget(.seconds(10)))
    #expect(listed.count == 65536)
    #expect(listed.last?.name == "n65536")
    #expect(listed.first?.vmClockNanoseconds == 7_000_000_123)
    let view = try layer.snapshotLayer(id: "65536")
    #expect(try LayerChain(top: view).read(at: 0, count: 2) == [0x11, 0x11])
  }
}

/// Requires the same allocation map (kind, depth, host offset) from two chains.
func expectSameMap(
  _ a: LayerChain, _ b: LayerChain, _ label: String, sourceLocation: SourceLocation = #_sourceLocation
) throws {
  var left: [ChainExtent] = []
  var right: [ChainExtent] = []
  try a.forEachStatus { left.append($0) }
  try b.forEachStatus { right.append($0) }
  func strip(_ e: ChainExtent) -> String {
    "\(e.offset)+\(e.length) \(e.kind) d\(e.depth) \(e.hostOffset.map(String.init) ?? "-") c\(e.compressed)"
  }
  #expect(left.map(strip) == right.map(strip), "\(label)", sourceLocation: sourceLocation)
}
