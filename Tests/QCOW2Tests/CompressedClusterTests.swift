import ImageFormats
import QCOW2
import TestSupport
import Testing
import VDiskCore

/// Compressed clusters (qcow2 spec, "Compressed Clusters Descriptor").
@Suite struct CompressedClusterTests {
  @Test(arguments: [4096, 65536, 2 << 20])
  func convertedWithCompression(clusterSize: Int) throws {
    let scratch = try Scratch("compressed")
    defer { scratch.remove() }
    let source = scratch.file("src.qcow2")
    let image = scratch.file("c.qcow2")
    let size: UInt64 = 6 << 20
    try Qemu.create(source, size: "\(size)", options: ["cluster_size=\(clusterSize)"])
    try Qemu.scatterPatterns(source, size: size, count: 40, seed: 77)
    // Some incompressible-ish data too: patterns compress to almost nothing.
    try Qemu.io(source, ["write -P 0x99 \(size - 4096) 4096"])
    try Qemu.img("convert", "-c", "-O", "qcow2", "-o", "cluster_size=\(clusterSize)", source, image)
    try expectMatchesQemu(image, scratch: scratch)
    let layer = try #require(try openChain(image).top as? QCOW2Layer)
    let e = try layer.extent(at: 0, maxLength: size)
    if case .compressed(let d) = e.mapping {
      #expect(d.decompressedLength == clusterSize)
      #expect(e.length <= UInt64(clusterSize))
    }
  }

  @Test func mixedCompressedAndPlainWritesThroughQemuIo() throws {
    let scratch = try Scratch("compressed-io")
    defer { scratch.remove() }
    let image = scratch.file("m.qcow2")
    try Qemu.create(image, size: "2M")
    try Qemu.io(image, ["write -c -P 0x31 0 64k", "write -P 0x32 64k 64k", "write -c -P 0x33 128k 64k"])
    try expectMatchesQemu(image, scratch: scratch)
    let layer = try openChain(image).top
    // A compressed extent never reaches past its cluster, even when the next is compressed too.
    #expect(try layer.extent(at: 1000, maxLength: 1 << 20).length == 65536 - 1000)
  }

  @Test func sequentialSmallReadsInflateACompressedClusterOnce() throws {
    let scratch = try Scratch("inflate-once")
    defer { scratch.remove() }
    let image = scratch.file("c.qcow2")
    try Qemu.create(image, size: "1M")
    try Qemu.io(image, ["write -c -P 0x42 0 64k", "write -c -P 0x43 64k 64k"])
    let chain = try openChain(image)
    let layer = try #require(chain.top as? QCOW2Layer)
    for i in 0..<16 {
      let bytes = try chain.read(at: UInt64(i) * 4096, count: 4096)
      #expect(bytes == [UInt8](repeating: 0x42, count: 4096))
    }
    #expect(layer.decompressionCount == 1)
    _ = try chain.read(at: 65536 + 512, count: 100)
    #expect(layer.decompressionCount == 2)
    _ = try chain.read(at: 0, count: 128 << 10)
    #expect(layer.decompressionCount == 2)
  }

  @Test func garbageCompressedDataFailsOnlyThatRead() throws {
    let scratch = try Scratch("compressed-garbage")
    defer { scratch.remove() }
    let image = scratch.file("g.qcow2")
    try Qemu.create(image, size: "1M")
    try Qemu.io(image, ["write -c -P 0x42 0 64k", "write -P 0x43 64k 64k"])
    let (_, l2) = try firstL2Table(image)
    let entry = try field(image, at: l2, width: 8)
    #expect(entry & (1 << 62) != 0)
    let host = entry & ((1 << 54) - 1)  // x = 62 - (16 - 8) = 54
    // 0xff bytes: an invalid deflate block type.
    try patch(image, at: host, bytes: [UInt8](repeating: 0xFF, count: 64))
    let chain = try openChain(image)
    expectVDiskError(.corrupt, [image, "compressed cluster at \(hex(host))"]) {
      _ = try chain.read(at: 0, count: 4096)
    }
    #expect(try chain.read(at: 65536, count: 4) == [0x43, 0x43, 0x43, 0x43])
  }

  @Test func compressedDataCutByEndOfFileReadsAsZeroInput() throws {
    let scratch = try Scratch("compressed-eof")
    defer { scratch.remove() }
    let image = scratch.file("t.qcow2")
    try Qemu.create(image, size: "1M")
    try Qemu.io(image, ["write -c -P 0x42 0 64k"])
    let (_, l2) = try firstL2Table(image)
    let entry = try field(image, at: l2, width: 8)
    let host = entry & ((1 << 54) - 1)
    // Claim many more sectors than the file holds: the input past EOF reads as zeros and the
    // stream (which ends well before) still inflates.
    let x: UInt64 = 54
    try patch(image, at: l2, entry | (UInt64(100) << x), width: 8)
    try sh("truncate -s \(host + 512) \(image)")
    let chain = try openChain(image)
    let bytes = try chain.read(at: 0, count: 65536)
    #expect(bytes == [UInt8](repeating: 0x42, count: 65536))
  }
}
