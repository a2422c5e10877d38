import ImageFormats
import QCOW2
import TestSupport
import Testing
import VDiskCore

/// Extended L2 entries: 32 subclusters per cluster (qcow2 spec, "Extended L2 Entries").
@Suite struct ExtendedL2Tests {
  @Test(arguments: [65536, 131072])
  func partialSubclusterWritesOverABackingFile(clusterSize: Int) throws {
    let scratch = try Scratch("extl2")
    defer { scratch.remove() }
    let base = scratch.file("base.qcow2")
    let top = scratch.file("top.qcow2")
    let sub = clusterSize / 32
    try Qemu.create(base, size: "4M")
    try Qemu.io(base, ["write -P 0x5a 0 4M"])
    try Qemu.create(
      top, size: "4M", options: ["extended_l2=on", "cluster_size=\(clusterSize)"], backing: "base.qcow2",
      backingFormat: "qcow2")
    try Qemu.io(
      top,
      [
        "write -P 0x11 \(sub) \(sub)",  // one subcluster in the middle of cluster 0
        "write -P 0x12 \(3 * sub + 100) 1000",  // partial subcluster: copy-on-write of the rest
        "write -z \(5 * sub) \(2 * sub)",  // zero subclusters in an allocated cluster
        "write -z \(clusterSize + 4 * sub) \(sub)",  // zero subcluster in an unallocated cluster
        "write -P 0x13 \(2 * clusterSize - sub) \(2 * sub)",  // across a cluster boundary
        "write -P 0x14 \(3 * clusterSize) \(clusterSize)",  // a whole cluster
      ])
    try expectMatchesQemu(top, scratch: scratch)

    let chain = try openChain(top)
    let layer = try #require(chain.top as? QCOW2Layer)
    #expect(layer.header.hasExtendedL2)
    #expect(try layer.extent(at: 0, maxLength: 4 << 20).mapping == .unallocated)
    #expect(try layer.extent(at: 0, maxLength: 4 << 20).length == UInt64(sub))
    let written = try layer.extent(at: UInt64(sub), maxLength: 1 << 20)
    #expect(written.length == UInt64(sub))
    guard case .data = written.mapping else {
      Issue.record("expected data, got \(written.mapping)")
      return
    }
    let zeros = try layer.extent(at: UInt64(5 * sub), maxLength: 1 << 20)
    #expect(zeros.mapping == .zero)
    #expect(zeros.length == UInt64(2 * sub))
    #expect(try layer.extent(at: UInt64(clusterSize + 4 * sub), maxLength: 1 << 20).mapping == .zero)
    #expect(try chain.read(at: UInt64(clusterSize + 4 * sub), count: 2) == [0, 0])
    #expect(try chain.read(at: UInt64(clusterSize + 5 * sub), count: 2) == [0x5a, 0x5a])
  }

  @Test func compressedClustersHaveNoSubclusters() throws {
    let scratch = try Scratch("extl2-compressed")
    defer { scratch.remove() }
    let image = scratch.file("c.qcow2")
    try Qemu.create(image, size: "1M", options: ["extended_l2=on"])
    try Qemu.io(image, ["write -c -P 0x21 0 64k", "write -P 0x22 64k 2k"])
    try expectMatchesQemu(image, scratch: scratch)
    let layer = try openChain(image).top
    let e = try layer.extent(at: 2048, maxLength: 1 << 20)
    #expect(e.length == 65536 - 2048)
    guard case .compressed = e.mapping else {
      Issue.record("expected compressed, got \(e.mapping)")
      return
    }
  }

  @Test func subclusterBothAllocatedAndZeroIsCorrupt() throws {
    let scratch = try Scratch("extl2-bad")
    defer { scratch.remove() }
    let image = scratch.file("b.qcow2")
    try Qemu.create(image, size: "1M", options: ["extended_l2=on"])
    try Qemu.io(image, ["write -P 0x21 0 64k", "write -P 0x22 64k 64k"])
    let (_, l2) = try firstL2Table(image)
    try patch(image, at: l2 + 8, 0x0000_0001_0000_0001, width: 8)
    let chain = try openChain(image)
    expectVDiskError(.corrupt, [image, "subcluster"]) { _ = try chain.read(at: 0, count: 512) }
    #expect(try chain.read(at: 65536, count: 1) == [0x22])
  }
}

extension ExtendedL2Tests {
  @Test func largeEmptyExtendedL2ImageMapsQuickly() throws {
    let scratch = try Scratch("extl2-big")
    defer { scratch.remove() }
    let image = scratch.file("big.qcow2")
    // Preallocated metadata: every L2 table exists, every entry has a host cluster and no
    // subcluster allocated — the slowest case for a map walk.
    try Qemu.create(image, size: "4G", options: ["extended_l2=on", "preallocation=metadata"])
    try Qemu.io(image, ["write -P 0x61 1G 6k", "write -z 2G 40k"])
    let clock = ContinuousClock()
    let start = clock.now
    let chain = try openChain(image)
    #expect(try layerMap(chain.top) == qemuMap(image))
    #expect(clock.now - start < timeBudget(.seconds(5)))
  }
}
