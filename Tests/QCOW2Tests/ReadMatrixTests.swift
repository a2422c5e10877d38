import ImageFormats
import QCOW2
import TestSupport
import Testing
import VDiskCore

/// Whole-disk reads compared byte for byte with `qemu-img convert -O raw`.
@Suite struct ReadMatrixTests {
  static let clusterSizes = [512, 4096, 65536, 2 << 20]
  static let compats = ["0.10", "1.1"]

  @Test(arguments: clusterSizes, compats)
  func scatteredWrites(clusterSize: Int, compat: String) throws {
    let scratch = try Scratch("matrix")
    defer { scratch.remove() }
    let image = scratch.file("disk.qcow2")
    let size: UInt64 = clusterSize >= 2 << 20 ? 8 << 20 : 4 << 20
    try Qemu.create(image, size: "\(size)", options: ["cluster_size=\(clusterSize)", "compat=\(compat)"])
    try Qemu.scatterPatterns(image, size: size, count: 60, seed: UInt64(clusterSize) &+ UInt64(compat.count))
    try expectMatchesQemu(image, scratch: scratch)

    let layer = try #require(try openChain(image).top as? QCOW2Layer)
    #expect(layer.header.clusterSize == UInt64(clusterSize))
    #expect(layer.header.version == (compat == "0.10" ? 2 : 3))
    #expect(layer.info.formatSpecific.first == InfoField("compat", .string(compat)))
  }

  @Test func virtualSizeNotAMultipleOfTheClusterSize() throws {
    let scratch = try Scratch("oddsize")
    defer { scratch.remove() }
    let image = scratch.file("odd.qcow2")
    let size: UInt64 = 3 * 65536 + 5 * 512
    try Qemu.create(image, size: "\(size)", options: ["cluster_size=65536"])
    try Qemu.io(
      image, ["write -P 0x21 0 512", "write -P 0x22 \(size - 1024) 1024", "write -P 0x23 65000 1000"])
    try expectMatchesQemu(image, scratch: scratch)
    let chain = try openChain(image)
    #expect(chain.virtualSize == size)
    #expect(try chain.read(at: size - 512, count: 4096) == [UInt8](repeating: 0x22, count: 512))
  }

  @Test func zeroClustersOfBothKindsOverABackingFile() throws {
    let scratch = try Scratch("zero")
    defer { scratch.remove() }
    let base = scratch.file("base.qcow2")
    let top = scratch.file("top.qcow2")
    try Qemu.create(base, size: "2M")
    try Qemu.io(base, ["write -P 0x5a 0 2M"])
    try Qemu.create(top, size: "2M", backing: "base.qcow2", backingFormat: "qcow2")
    try Qemu.io(
      top,
      [
        "write -P 0x11 0 256k",  // allocated…
        "write -z 64k 64k",  // …then zeroed: zero cluster with a preallocated offset (or freed)
        "write -z -u 128k 64k",  // zeroed with unmapping allowed
        "write -z 512k 128k",  // zero on unallocated clusters: plain zero clusters
        "write -P 0x12 1M 64k",
      ])
    try expectMatchesQemu(top, scratch: scratch)
    let chain = try openChain(top)
    #expect(try chain.read(at: 64 << 10, count: 4) == [0, 0, 0, 0])
    #expect(try chain.read(at: 512 << 10, count: 4) == [0, 0, 0, 0])
    #expect(try chain.read(at: 768 << 10, count: 1) == [0x5a])
    // Both zero kinds are reported as .zero, not as unallocated (the backing holds 0x5a there).
    let layer = chain.top
    #expect(try layer.extent(at: 512 << 10, maxLength: 1 << 20).mapping == .zero)
    #expect(try layer.extent(at: 512 << 10, maxLength: 1 << 20).length == 128 << 10)
  }

  @Test func preallocatedZeroClusterKeepsItsOffsetButReadsZeros() throws {
    let scratch = try Scratch("zeroalloc")
    defer { scratch.remove() }
    let image = scratch.file("z.qcow2")
    try Qemu.create(image, size: "1M", options: ["preallocation=metadata"])
    try Qemu.io(image, ["write -P 0x33 0 1M"])
    // Turn the L2 entry of cluster 1 into "zero with a preallocated host offset" by hand.
    let (_, l2) = try firstL2Table(image)
    let entry = try field(image, at: l2 + 8, width: 8)
    try patch(image, at: l2 + 8, entry | 1, width: 8)
    let chain = try openChain(image)
    #expect(try chain.top.extent(at: 65536, maxLength: 65536).mapping == .zero)
    try expectMatchesQemu(image, scratch: scratch)
  }

  @Test func extentsAreMaximalRunsLikeQemuImgMap() throws {
    let scratch = try Scratch("coalesce")
    defer { scratch.remove() }
    let image = scratch.file("c.qcow2")
    try Qemu.create(image, size: "64M", options: ["cluster_size=4096"])
    // Long sequential writes spanning several L2 tables (one covers 2 MiB of 4 KiB clusters),
    // a zeroed range, and holes.
    try Qemu.io(
      image, ["write -P 0x44 1M 6M", "write -z 9M 3M", "write -P 0x45 20M 1M", "write -P 0x46 40M 8k"])
    let layer = try openChain(image).top
    #expect(try layerMap(layer) == qemuMap(image))
    let data = try layer.extent(at: 1 << 20, maxLength: 63 << 20)
    #expect(data.length == 1 << 20)  // up to where qemu put the next L2 table
    #expect(try layer.extent(at: 48 << 20, maxLength: 16 << 20).length == 16 << 20)
    try expectMatchesQemu(image, scratch: scratch)
  }
}
