import Foundation
import ImageFormats
import Parallels
import TestSupport
import Testing
import VDiskCore

/// Hostile DiskDescriptor.xml files: entity bombs, deep nesting, loops in snapshot parents,
/// storages that overlap or leave gaps, missing or wrong files; each one clear `VDiskError`.
@Suite struct ParallelsBundleHostileTests {
  /// A bundle of one 1 MiB expanding image under the default top GUID, its descriptor's path,
  /// and the descriptor's text.
  static func bundle(_ scratch: Scratch) throws -> (folder: String, descriptor: String, xml: BundleXML) {
    let folder = scratch.file("h.hdd")
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    _ = try expandingImage(folder, "disk.hds", size: 1 << 20, writes: [(0, 4096, 0x55)])
    let xml = BundleXML(
      sectors: 2048,
      storages: [.init(start: 0, end: 2048, images: [.init(guid: BundleXML.defaultTop, file: "disk.hds")])],
      shots: [(BundleXML.defaultTop, BundleXML.root)])
    return (folder, try xml.write(in: folder), xml)
  }

  static func write(_ text: String, to path: String) throws {
    try Data(text.utf8).write(to: URL(fileURLWithPath: path))
  }

  @Test func markupBombsAndBrokenMarkup() throws {
    let scratch = try Scratch("prl-xml-hostile")
    defer { scratch.remove() }
    let (folder, descriptor, xml) = try Self.bundle(scratch)
    #expect(try openChain(folder).virtualSize == 1 << 20)
    let good = xml.text
    let bomb = """
      <?xml version="1.0"?>
      <!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
      <Parallels_disk_image>&lol2;</Parallels_disk_image>
      """
    let deep =
      "<Parallels_disk_image>" + String(repeating: "<a>", count: 100_000)
      + String(repeating: "</a>", count: 100_000)
      + "</Parallels_disk_image>"
    let wide =
      "<Parallels_disk_image>" + String(repeating: "<a/>", count: 200_000) + "</Parallels_disk_image>"
    let cases: [(String, VDiskError.Kind, [String])] = [
      (bomb, .corrupt, ["document type declarations are not allowed"]),
      (deep, .corrupt, ["nested deeper than 32"]),
      (wide, .corrupt, ["more than 100000 elements"]),
      (good + String(repeating: " ", count: 2 << 20), .corrupt, ["larger than 1 MiB"]),
      (good.replacingOccurrences(of: "</StorageData>", with: "</Storage>"), .corrupt, ["does not close"]),
      (
        good.replacingOccurrences(of: "<Padding>0", with: "<Padding>&bogus;"), .corrupt,
        ["unknown entity &bogus;"]
      ),
      (
        good.replacingOccurrences(of: "</Parallels_disk_image>", with: ""), .corrupt, ["document ends inside"]
      ),
      (good + "<x/>", .corrupt, ["content after the root element"]),
      (good.replacingOccurrences(of: "<Padding>0", with: "<Padding>1"), .unsupported, ["<Padding> 1"]),
      (
        good.replacingOccurrences(of: ">2048</Disk_size>", with: ">abc</Disk_size>"), .corrupt,
        ["not a number"]
      ),
      (good.replacingOccurrences(of: "Compressed", with: "Sparse"), .unsupported, ["image type \"Sparse\""]),
    ]
    for (text, kind, fragments) in cases {
      try Self.write(text, to: descriptor)
      expectVDiskError(kind, [descriptor] + fragments) { _ = try openChain(folder) }
    }
    // Entities and character references that are allowed decode.
    try Self.write(good.replacingOccurrences(of: "disk.hds", with: "d&#105;sk&#x2e;hds"), to: descriptor)
    #expect(try openChain(folder).virtualSize == 1 << 20)
  }

  @Test func storagesThatOverlapOrLeaveGaps() throws {
    let scratch = try Scratch("prl-storages-hostile")
    defer { scratch.remove() }
    let (folder, descriptor, xml) = try Self.bundle(scratch)
    let image = BundleXML.Image(guid: BundleXML.defaultTop, file: "disk.hds")
    let cases: [([BundleXML.Storage], [String])] = [
      (
        [.init(start: 0, end: 1500, images: [image]), .init(start: 1000, end: 2048, images: [image])],
        ["overlaps"]
      ),
      (
        [.init(start: 0, end: 1000, images: [image]), .init(start: 1500, end: 2048, images: [image])],
        ["1000–1500 are in no storage"]
      ),
      ([.init(start: 100, end: 2048, images: [image])], ["0–100 are in no storage"]),
      ([.init(start: 0, end: 1024, images: [image])], ["end at sector 1024, the disk at 2048"]),
      (
        [.init(start: 0, end: 0, images: [image]), .init(start: 0, end: 2048, images: [image])], ["ends at 0"]
      ),
      ([.init(start: 0, end: 2048, images: [])], ["no single image for snapshot"]),
      ([.init(start: 0, end: 2048, images: [image, image])], ["no single image for snapshot"]),
      ([], ["0 storages"]),
    ]
    for (storages, fragments) in cases {
      var bad = xml
      bad.storages = storages
      try bad.write(in: folder)
      expectVDiskError(.corrupt, [descriptor] + fragments) { _ = try openChain(folder) }
    }
    var huge = xml
    huge.sectors = UInt64.max
    huge.storages = [.init(start: 0, end: UInt64.max, images: [image])]
    try huge.write(in: folder)
    expectVDiskError(.corrupt, [descriptor, "exceeds 64 PiB"]) { _ = try openChain(folder) }
  }

  @Test func snapshotParentsThatLoopOrRunDeep() throws {
    let scratch = try Scratch("prl-shots-hostile")
    defer { scratch.remove() }
    let (folder, descriptor, xml) = try Self.bundle(scratch)
    let images = (1...70).map { BundleXML.Image(guid: guid($0), file: "disk.hds") }
    var looped = xml
    looped.storages = [.init(start: 0, end: 2048, images: Array(images[0..<3]))]
    looped.shots = [(guid(1), guid(3)), (guid(2), guid(1)), (guid(3), guid(2))]
    looped.top = guid(3)
    try looped.write(in: folder)
    expectVDiskError(.corrupt, [descriptor, "snapshot parents loop", guid(3)]) { _ = try openChain(folder) }
    looped.shots = [(guid(1), guid(1))]
    looped.top = guid(1)
    try looped.write(in: folder)
    expectVDiskError(.corrupt, [descriptor, "snapshot parents loop"]) { _ = try openChain(folder) }

    var deep = xml
    deep.storages = [.init(start: 0, end: 2048, images: images)]
    deep.shots = [(guid(1), BundleXML.root)] + (2...70).map { (guid($0), guid($0 - 1)) }
    deep.top = guid(70)
    try deep.write(in: folder)
    expectVDiskError(.corrupt, [descriptor, "more than 64 snapshot layers"]) { _ = try openChain(folder) }
    deep.top = guid(64)
    try deep.write(in: folder)
    #expect(try openChain(folder).top.chain.count == 64)

    // 64 layers of 17 storages: too many files.
    deep.sectors = 17 * 2048
    deep.storages = (0..<17).map {
      .init(start: UInt64($0) * 2048, end: UInt64($0 + 1) * 2048, images: images)
    }
    try deep.write(in: folder)
    expectVDiskError(.unsupported, [descriptor, "would open more than 1024 files"]) {
      _ = try openChain(folder)
    }

    var orphan = xml
    orphan.storages = [.init(start: 0, end: 2048, images: Array(images[0..<2]))]
    orphan.shots = [(guid(2), guid(9))]
    orphan.top = guid(2)
    try orphan.write(in: folder)
    expectVDiskError(.corrupt, [descriptor, "snapshot \(guid(9)) has no <Shot>"]) {
      _ = try openChain(folder)
    }
  }

  @Test func wrongOrMissingFiles() throws {
    let scratch = try Scratch("prl-files-hostile")
    defer { scratch.remove() }
    let (folder, descriptor, xml) = try Self.bundle(scratch)
    try Data([UInt8](repeating: 1, count: 4096)).write(to: URL(fileURLWithPath: folder + "/small.raw"))
    var bad = xml
    bad.storages[0].images[0].file = "missing.hds"
    try bad.write(in: folder)
    expectVDiskError(.notFound, [descriptor, "missing.hds", "does not exist"]) { _ = try openChain(folder) }
    bad.storages[0].images[0].file = "small.raw"
    try bad.write(in: folder)
    expectVDiskError(.corrupt, [folder + "/small.raw", "no Parallels signature"]) {
      _ = try openChain(folder)
    }
    bad.storages[0].images[0].type = "Plain"
    try bad.write(in: folder)
    expectVDiskError(.corrupt, [folder + "/small.raw", "smaller than its storage"]) {
      _ = try openChain(folder)
    }
    bad.storages[0].images[0].file = "json:{}"
    try bad.write(in: folder)
    expectVDiskError(.unsupported, [descriptor, "json:"]) { _ = try openChain(folder) }
    // With backing_dir, a file outside it is refused.
    bad.storages[0].images[0] = .init(guid: BundleXML.defaultTop, file: folder + "/disk.hds")
    try bad.write(in: folder)
    let elsewhere = try scratch.directory("elsewhere")
    expectVDiskError(.notPermitted, [descriptor]) {
      _ = try openChain(descriptor, .init(backingDirectory: elsewhere))
    }
  }

  @Test func randomDescriptorCorruptionNeverCrashes() throws {
    let scratch = try Scratch("prl-xml-fuzz")
    defer { scratch.remove() }
    let (folder, descriptor, xml) = try Self.bundle(scratch)
    let original = Array(xml.text.utf8)
    var rng = SplitMix64(seed: 21)
    for _ in 0..<400 {
      var bytes = original
      for _ in 0..<(1 + rng.next() % 4) {
        let i = Int(rng.next() % UInt64(bytes.count))
        switch rng.next() % 3 {
        case 0: bytes[i] = UInt8(truncatingIfNeeded: rng.next())
        case 1: bytes.remove(at: i)
        default: bytes.insert(Array("<>/&;\"'".utf8)[Int(rng.next() % 7)], at: i)
        }
      }
      try Data(bytes).write(to: URL(fileURLWithPath: descriptor))
      do {
        let chain = try openChain(folder)
        _ = try readAll(chain)
      } catch is VDiskError {
      }
    }
  }
}
