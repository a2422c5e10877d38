import Foundation
import ImageFormats
import Parallels
import TestSupport
import Testing
import VDiskCore

/// Parallels bundles (a `.hdd` folder with DiskDescriptor.xml): one image, split images of
/// several storages, and snapshot layers, with known content; opened by the folder or the
/// descriptor, through the API and a mount.
@Suite struct ParallelsBundleTests {
  /// One storage, one expanding image, the default top GUID: the bundle reads as its image does.
  @Test func singleImageBundleReadsAsItsImage() throws {
    let scratch = try Scratch("prl-bundle")
    defer { scratch.remove() }
    let bundle = scratch.file("vm.hdd")
    try FileManager.default.createDirectory(atPath: bundle, withIntermediateDirectories: true)
    let hds = try expandingImage(
      bundle, "harddisk.hdd.0.\(BundleXML.defaultTop).hds", size: 6 << 20,
      writes: [(0, 4096, 0x11), (3 << 20, 70_000, 0x22), ((6 << 20) - 512, 512, 0x33)])
    let descriptor = try BundleXML(
      sectors: 12288,
      storages: [
        .init(
          start: 0, end: 12288,
          images: [.init(guid: BundleXML.defaultTop, file: (hds as NSString).lastPathComponent)])
      ],
      shots: [(BundleXML.defaultTop, BundleXML.root)]
    ).write(in: bundle)
    let expected = try Qemu.rawContent(of: hds, format: "parallels", scratch: scratch)
    #expect(try FormatRegistry.standard.probe(ImageFile.open(descriptor)).name == "parallels")
    for path in [bundle, descriptor, bundle + "/"] {
      let chain = try openChain(path)
      #expect(chain.virtualSize == 6 << 20)
      #expect(try readAll(chain) == expected)
      #expect(chain.top.chain.count == 1)
      #expect(chain.top.file.path.hasSuffix("/DiskDescriptor.xml"))
    }
    expectVDiskError(.readOnly, [descriptor, "not supported"]) {
      _ = try openChain(bundle, .init(writable: true))
    }
  }

  /// Three storages: a plain raw file, a qemu-made expanding image with the new signature, and a
  /// hand-made one with the old signature; the disk is their concatenation.
  @Test func splitImageConcatenatesItsStorages() throws {
    let scratch = try Scratch("prl-split")
    defer { scratch.remove() }
    let bundle = scratch.file("split.hdd")
    try FileManager.default.createDirectory(atPath: bundle, withIntermediateDirectories: true)
    let top = BundleXML.defaultTop
    // Storage 1: 1 MiB raw.
    let plain = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 3 &+ 1) }
    try Data(plain).write(to: URL(fileURLWithPath: bundle + "/part0.hds"))
    // Storage 2: 2 MiB expanding.
    let writes: [(UInt64, UInt64, UInt8)] = [(0, 65536, 0x41), (1 << 20, 100_000, 0x42)]
    _ = try expandingImage(bundle, "part1.hds", size: 2 << 20, writes: writes)
    // Storage 3: 1.5 MiB, old signature, clusters out of order.
    let builder = ParallelsBuilder(
      clustersSignature: false, sectors: 3072, clusterSectors: 256, map: [nil, 2, 0, nil, 1, nil],
      slots: ParallelsBuilder.patterned(3, clusterSize: 256 * 512, seed: 5))
    try builder.write(to: bundle + "/part2.hds")
    let storages: [BundleXML.Storage] = [
      .init(start: 2048, end: 6144, images: [.init(guid: top, file: "part1.hds")]),
      .init(start: 0, end: 2048, images: [.init(guid: top, type: "Plain", file: "part0.hds")]),
      .init(start: 6144, end: 9216, images: [.init(guid: top, file: bundle + "/part2.hds")]),  // absolute
    ]
    try BundleXML(sectors: 9216, storages: storages, shots: [(top, BundleXML.root)]).write(in: bundle)

    var expected = plain + [UInt8](repeating: 0, count: 2 << 20)
    apply(writes, to: &expected, base: 1 << 20)
    expected += builder.content
    let chain = try openChain(bundle)
    #expect(chain.virtualSize == 9216 * 512)
    #expect(try readAll(chain) == expected)
    // Map: the raw part is data, then the expanding parts by their BATs.
    let runs = try layerMap(chain.top)
    #expect(runs.first == MapRun(start: 0, length: 1 << 20, kind: .data, offset: 0))
    #expect(runs.contains { $0.kind == .unallocated })
    let info = chain.top.info
    #expect(info.format == "parallels")
    #expect(info.formatSpecific.contains { $0.key == "storages" })
  }

  /// Snapshot layers: root (a plain and an expanding storage) ← s1 ← top (named by TopGUID, not
  /// the default GUID), plus a sibling snapshot that is not in the chain. Each layer's clusters
  /// hide its parent's; the rest shows through.
  @Test func snapshotLayersStack() throws {
    let scratch = try Scratch("prl-snap")
    defer { scratch.remove() }
    let bundle = scratch.file("snap.hdd")
    try FileManager.default.createDirectory(atPath: bundle, withIntermediateDirectories: true)
    let (root, s1, top, sibling) = (guid(1), guid(2), guid(3), guid(4))
    let half: UInt64 = 2 << 20  // each storage: 2 MiB; clusters of 64 KiB
    var expected = [UInt8](repeating: 0, count: Int(2 * half))
    // Root: storage A plain, storage B expanding.
    let rootA = (0..<Int(half)).map { UInt8(truncatingIfNeeded: $0 &* 5 &+ 2) }
    try Data(rootA).write(to: URL(fileURLWithPath: bundle + "/root-a.hds"))
    expected.replaceSubrange(0..<Int(half), with: rootA)
    let rootB: [(UInt64, UInt64, UInt8)] = [(0, half, 0x10)]
    _ = try expandingImage(bundle, "root-b.hds", size: half, writes: rootB)
    apply(rootB, to: &expected, base: half)
    // s1: whole clusters over both storages.
    let s1A: [(UInt64, UInt64, UInt8)] = [(65536, 131072, 0x21)]
    let s1B: [(UInt64, UInt64, UInt8)] = [(0, 65536, 0x22), (half - 65536, 65536, 0x23)]
    _ = try expandingImage(bundle, "s1-a.hds", size: half, writes: s1A)
    _ = try expandingImage(bundle, "s1-b.hds", size: half, writes: s1B)
    apply(s1A, to: &expected)
    apply(s1B, to: &expected, base: half)
    // top: one cluster in A that s1 also wrote, one in B; the sibling writes everything.
    let topA: [(UInt64, UInt64, UInt8)] = [(131072, 65536, 0x31)]
    let topB: [(UInt64, UInt64, UInt8)] = [(5 * 65536, 65536, 0x32)]
    _ = try expandingImage(bundle, "top-a.hds", size: half, writes: topA)
    _ = try expandingImage(bundle, "top-b.hds", size: half, writes: topB)
    apply(topA, to: &expected)
    apply(topB, to: &expected, base: half)
    let everything: [(UInt64, UInt64, UInt8)] = [(0, half, 0x77)]
    _ = try expandingImage(bundle, "sib-a.hds", size: half, writes: everything)
    _ = try expandingImage(bundle, "sib-b.hds", size: half, writes: everything)

    let sectors = 2 * half / 512
    let storages: [BundleXML.Storage] = [
      .init(
        start: 0, end: half / 512,
        images: [
          .init(guid: root, type: "Plain", file: "root-a.hds"), .init(guid: s1, file: "s1-a.hds"),
          .init(guid: top, file: "top-a.hds"), .init(guid: sibling, file: "sib-a.hds"),
        ]),
      .init(
        start: half / 512, end: sectors,
        images: [
          .init(guid: root, file: "root-b.hds"), .init(guid: s1, file: "s1-b.hds"),
          .init(guid: top, file: "top-b.hds"), .init(guid: sibling, file: "sib-b.hds"),
        ]),
    ]
    try BundleXML(
      sectors: sectors, storages: storages,
      shots: [(root, BundleXML.root), (s1, root), (sibling, s1), (top, s1)],
      top: top
    ).write(in: bundle)

    let chain = try openChain(bundle)
    #expect(try readAll(chain) == expected)
    let layers = chain.top.chain.compactMap { $0 as? BundleLayer }
    #expect(layers.map(\.snapshot) == [top, s1, root])
    #expect(try layerMap(layers[0]).filter { $0.kind == .data }.map(\.length) == [65536, 65536])
  }
}

/// The bundle folder mounted through the real binary: disk.raw is the stacked content.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct ParallelsBundleMountTests {
  @Test func mountedBundleFolder() throws {
    let scratch = try Scratch("prl-bundle-mount")
    defer { scratch.remove() }
    let bundle = scratch.file("m.hdd")
    try FileManager.default.createDirectory(atPath: bundle, withIntermediateDirectories: true)
    let size: UInt64 = 4 << 20
    let base: [(UInt64, UInt64, UInt8)] = [(0, size, 0x61)]
    let over: [(UInt64, UInt64, UInt8)] = [(1 << 20, 65536, 0x62)]
    _ = try expandingImage(bundle, "base.hds", size: size, writes: base)
    _ = try expandingImage(bundle, "top.hds", size: size, writes: over)
    try BundleXML(
      sectors: size / 512,
      storages: [
        .init(
          start: 0, end: size / 512,
          images: [
            .init(guid: guid(1), file: "base.hds"), .init(guid: BundleXML.defaultTop, file: "top.hds"),
          ])
      ],
      shots: [(guid(1), BundleXML.root), (BundleXML.defaultTop, guid(1))]
    ).write(in: bundle)
    var expected = [UInt8](repeating: 0, count: Int(size))
    apply(base, to: &expected)
    apply(over, to: &expected)
    let raw = scratch.file("expected.raw")
    try Data(expected).write(to: URL(fileURLWithPath: raw))
    try withReadOnlyMount(bundle, in: scratch) { mnt in
      let r = try run("cmp", [mnt + "/disk.raw", raw], check: false)
      #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
    }
  }
}
