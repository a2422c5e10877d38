import Foundation
import ImageFormats
import Parallels
import TestSupport
import Testing
import VDiskCore

/// A bundle of two storages and two snapshots (base ← top), each image made by qemu-img and
/// written by qemu-io: 4 MiB per storage.
struct TwoByTwoBundle {
  let folder: String
  let files: [String]
  static let storage: UInt64 = 4 << 20
  static let base = guid(7)

  init(in scratch: Scratch) throws {
    folder = scratch.file("two.hdd")
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    let size = Self.storage
    files = [
      try expandingImage(folder, "a-base.hds", size: size, writes: [(0, size, 0x31)]),
      try expandingImage(folder, "a-top.hds", size: size, writes: [(65536, 65536, 0x32)]),
      try expandingImage(folder, "b-base.hds", size: size, writes: [(0, 1 << 20, 0x33)]),
      try expandingImage(folder, "b-top.hds", size: size, writes: [(size - 65536, 65536, 0x34)]),
    ]
    let sectors = size / 512
    try BundleXML(
      sectors: 2 * sectors,
      storages: [
        .init(
          start: 0, end: sectors,
          images: [
            .init(guid: Self.base, file: "a-base.hds"), .init(guid: BundleXML.defaultTop, file: "a-top.hds"),
          ]
        ),
        .init(
          start: sectors, end: 2 * sectors,
          images: [
            .init(guid: Self.base, file: "b-base.hds"), .init(guid: BundleXML.defaultTop, file: "b-top.hds"),
          ]
        ),
      ],
      shots: [(Self.base, BundleXML.root), (BundleXML.defaultTop, Self.base)]
    ).write(in: folder)
  }

  /// Bytes the images occupy on disk (st_blocks).
  func allocatedBytes() throws -> UInt64 {
    try files.reduce(0) { sum, path in
      let blocks = try run("stat", ["-c", "%b", path]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
      return sum + (UInt64(blocks) ?? 0) * 512
    }
  }
}

/// What `info` says of a bundle: its virtual size, the snapshots of its chain, each storage's
/// images, and the disk size of all its files (not the descriptor's).
@Suite struct ParallelsBundleInfoTests {
  @Test func infoListsSnapshotsAndStorages() throws {
    let scratch = try Scratch("prl-bundle-info")
    defer { scratch.remove() }
    let bundle = try TwoByTwoBundle(in: scratch)
    let chain = try openChain(bundle.folder)
    let info = chain.top.info
    #expect(info.virtualSize == 8 << 20)
    let specific = Dictionary(uniqueKeysWithValues: info.formatSpecific.map { ($0.key, $0.value) })
    #expect(specific["snapshots"] == .array([.string(BundleXML.defaultTop), .string(TwoByTwoBundle.base)]))
    guard case .array(let storages)? = specific["storages"] else {
      Issue.record("no storages: \(info.formatSpecific)")
      return
    }
    #expect(storages.count == 2)
    let expected: [[(String, String)]] = [
      [(BundleXML.defaultTop, "a-top.hds"), (TwoByTwoBundle.base, "a-base.hds")],
      [(BundleXML.defaultTop, "b-top.hds"), (TwoByTwoBundle.base, "b-base.hds")],
    ]
    for (index, storage) in storages.enumerated() {
      guard case .object(let fields) = storage,
        case .array(let images)? = fields.first(where: { $0.key == "images" })?.value
      else {
        Issue.record("storage \(index): \(storage)")
        continue
      }
      #expect(fields.first?.value == .integer(Int64(index) * Int64(TwoByTwoBundle.storage)))
      let seen = images.compactMap { image -> (String, String)? in
        guard case .object(let f) = image,
          case .string(let snapshot)? = f.first(where: { $0.key == "snapshot" })?.value,
          case .string(let file)? = f.first(where: { $0.key == "file" })?.value
        else { return nil }
        return (snapshot, (file as NSString).lastPathComponent)
      }
      #expect(
        seen.map(\.0) == expected[index].map(\.0) && seen.map(\.1) == expected[index].map(\.1), "\(seen)")
    }
    // Every file of the bundle, the descriptor first.
    let files = try #require(
      (chain.top as? any FileSetLayer)?.files.map { ($0.path as NSString).lastPathComponent })
    #expect(files == ["DiskDescriptor.xml", "a-top.hds", "b-top.hds", "a-base.hds", "b-base.hds"])
  }

  /// Through the binary: the JSON and the human output give the virtual size, the snapshots,
  /// the storages, and a disk size counting the images.
  @Test func infoCommandShowsTheBundle() throws {
    let scratch = try Scratch("prl-bundle-info-cli")
    defer { scratch.remove() }
    let bundle = try TwoByTwoBundle(in: scratch)
    let images = try bundle.allocatedBytes()
    #expect(images > 4 << 20)
    let json = try run(vdiskfsBinary, ["info", "--output", "json", bundle.folder]).stdout
    let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
    #expect(object["virtual-size"] as? Int == 8 << 20, "\(json)")
    #expect(object["format"] as? String == "parallels")
    let actual = try #require(object["actual-size"] as? Int)
    #expect(UInt64(actual) >= images && UInt64(actual) < images + (64 << 10), "\(actual) vs \(images)")
    let data = try #require((object["format-specific"] as? [String: Any])?["data"] as? [String: Any])
    #expect(data["snapshots"] as? [String] == [BundleXML.defaultTop, TwoByTwoBundle.base], "\(json)")
    #expect((data["storages"] as? [Any])?.count == 2, "\(json)")

    let human = try run(vdiskfsBinary, ["info", bundle.folder]).stdout
    #expect(human.contains("virtual size: 8 MiB (8388608 bytes)"), "\(human)")
    #expect(!human.contains("disk size: 4 KiB") && !human.contains("disk size: 0 B"), "\(human)")
    #expect(human.contains("    snapshots: [\(BundleXML.defaultTop), \(TwoByTwoBundle.base)]"), "\(human)")
    #expect(human.contains("    storages:\n        [0]:\n            start: 0\n"), "\(human)")
    #expect(human.contains("                    file: \(bundle.folder)/b-base.hds"), "\(human)")
  }
}

/// A bundle mount takes QEMU's locks on the images it opens, as a single `.hds` mount does: a
/// QEMU writer of any of them keeps a read-only mount out (unless force_share), and a mounted
/// bundle keeps a QEMU writer out.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct ParallelsBundleLockTests {
  @Test func aQemuWriterOfAnyImageKeepsTheMountOut() throws {
    let scratch = try Scratch("prl-bundle-lock")
    defer { scratch.remove() }
    let bundle = try TwoByTwoBundle(in: scratch)
    for (n, image) in bundle.files.enumerated() {
      let writer = try QemuWriter(image, driver: "parallels", socket: scratch.file("nbd\(n).sock"))
      defer { writer.stop() }
      // The plain .hds mount and the bundle mount are both refused, naming the image.
      for target in [image, bundle.folder] {
        let mnt = try scratch.directory("m\(n)-\(target == image ? "hds" : "bundle")")
        let r = try run("timeout", ["30", vdiskfsBinary, target, mnt, "-o", "ro"], check: false)
        defer { if mountTable().contains(mnt) { _ = try? run("fusermount3", ["-u", mnt], check: false) } }
        #expect(r.status == 8, "\(target): \(r.status): \(r.stderr)")
        #expect(r.stderr.contains(image) && r.stderr.contains("lock"), "\(r.stderr)")
      }
    }
    // Without a writer the bundle mounts; with one, -o ro,force_share takes no locks.
    let writer = try QemuWriter(bundle.files[1], driver: "parallels", socket: scratch.file("nbd9.sock"))
    defer { writer.stop() }
    try withReadOnlyMount(bundle.folder, in: scratch, arguments: ["-o", "force_share"]) { mnt in
      let head = try #require(FileHandle(forReadingAtPath: mnt + "/disk.raw")).readData(ofLength: 2)
      #expect(head == Data([0x31, 0x31]))
    }
  }

  @Test func aMountedBundleKeepsQemuWritersOut() throws {
    let scratch = try Scratch("prl-bundle-lock2")
    defer { scratch.remove() }
    let bundle = try TwoByTwoBundle(in: scratch)
    try withReadOnlyMount(bundle.folder, in: scratch) { _ in
      for image in bundle.files {
        let r = try run("qemu-io", ["-f", "parallels", "-c", "write 0 512", image], check: false)
        #expect(r.status != 0, "\(image)")
        #expect(r.stderr.contains("Failed to get \"write\" lock"), "\(r.stderr)")
      }
    }
    let after = try run("qemu-io", ["-f", "parallels", "-c", "write 0 512", bundle.files[1]], check: false)
    #expect(after.status == 0, "\(after.stderr)")
  }
}
