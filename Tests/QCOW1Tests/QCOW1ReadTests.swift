import Foundation
import ImageFormats
import QCOW1
import TestSupport
import Testing
import VDiskCore

/// qcow version 1 images read byte for byte as `qemu-img convert -O raw` reads them.
@Suite struct QCOW1ReadTests {
  @Test func patternsMatchQemu() throws {
    let scratch = try Scratch("qcow1-read")
    defer { scratch.remove() }
    let image = scratch.file("disk.qcow")
    let size: UInt64 = 37 << 20
    try Qemu.create(image, format: "qcow", size: "\(size + 300)")
    try Qemu.io(
      image, format: "qcow",
      ["write -P 0x11 0 4k", "write -P 0x22 1000k 2500k", "write -P 0x33 \(size - 512) 512"])
    try Qemu.scatterPatterns(image, format: "qcow", size: size, count: 25, seed: 4)
    try expectSameAsQemu(image, format: "qcow", scratch: scratch)
    let chain = try openChain(image)
    #expect(chain.top.formatName == "qcow")
    #expect(chain.top.info.clusterSize == 4096)
    #expect(try FormatRegistry.standard.probe(ImageFile.open(image)) == QCOW1Driver.self)
  }

  /// `qemu-img convert -c -O qcow`: compressed clusters (bit 63, the size above bit 63 -
  /// cluster_bits), packed at sector offsets, next to clusters that did not compress.
  @Test func compressedClustersMatchQemu() throws {
    let scratch = try Scratch("qcow1-compressed")
    defer { scratch.remove() }
    let source = scratch.file("src.qcow2")
    try Qemu.create(source, size: "9M")
    try Qemu.io(source, ["write -P 0x5a 0 1M", "write -P 0x6b 3M 300k", "write -P 0x01 8M 4k"])
    // Incompressible clusters stay raw.
    try sh(
      "head -c 262144 /dev/urandom > \(scratch.file("noise")) && qemu-io -f qcow2 -c 'write -s \(scratch.file("noise")) 5M 256k' \(source) >/dev/null"
    )
    let image = scratch.file("c.qcow")
    try convertCompressed(source, sourceFormat: "qcow2", to: image)
    let chain = try openChain(image)
    var kinds: [String] = []
    var position: UInt64 = 0
    while position < chain.virtualSize {
      let e = try chain.top.extent(at: position, maxLength: chain.virtualSize - position)
      switch e.mapping {
      case .compressed: kinds.append("compressed")
      case .data: kinds.append("data")
      default: break
      }
      position += e.length
    }
    #expect(kinds.contains("compressed"))
    #expect(kinds.contains("data"))
    #expect(try readAll(chain) == (try Qemu.rawContent(of: image, format: "qcow", scratch: scratch)))
    #expect(try readAll(chain) == (try Qemu.rawContent(of: source, scratch: scratch)))
    // Small reads inside one compressed cluster.
    #expect(try chain.read(at: (3 << 20) + 100, count: 10) == [UInt8](repeating: 0x6b, count: 10))
  }

  /// A qcow v1 over a raw file (probed: qcow v1 records no backing format), and qcow2 over qcow
  /// v1.
  @Test func backingFilesMatchQemu() throws {
    let scratch = try Scratch("qcow1-chain")
    defer { scratch.remove() }
    let base = scratch.file("base.raw")
    let middle = scratch.file("mid.qcow")
    let top = scratch.file("top.qcow2")
    try Qemu.create(base, format: "raw", size: "6M")
    try Qemu.io(base, format: "raw", ["write -P 0x1a 0 6M"])
    try Qemu.create(middle, format: "qcow", size: "6M", backing: "base.raw", backingFormat: "raw")
    try Qemu.io(middle, format: "qcow", ["write -P 0x2b 1M 100k", "write -P 0x2c 5000k 3k"])
    #expect(try openChain(middle).layers.map(\.formatName) == ["qcow", "raw"])
    try expectSameAsQemu(middle, format: "qcow", scratch: scratch)
    try Qemu.create(top, size: "6M", backing: "mid.qcow", backingFormat: "qcow")
    try Qemu.io(top, ["write -P 0x3c 1050k 8k"])
    let chain = try openChain(top)
    #expect(chain.layers.map(\.formatName) == ["qcow2", "qcow", "raw"])
    #expect(try readAll(chain) == (try Qemu.rawContent(of: top, scratch: scratch)))
    #expect(chain.layers[1].info.backingFilename == "base.raw")
  }

  /// Cluster sizes of 512 bytes and 64 KiB, L2 tables of 64 and 8192 entries (QEMU's limits),
  /// built in code; qemu reads them too. (64 KiB clusters with 8192-entry tables would make a
  /// 1.5 GiB disk to read.)
  @Test(arguments: [(UInt8(9), UInt8(6)), (9, 13), (16, 6), (13, 9)])
  func otherGeometriesMatchQemu(clusterBits: UInt8, l2Bits: UInt8) throws {
    let scratch = try Scratch("qcow1-geometry")
    defer { scratch.remove() }
    let clusterSize = 1 << Int(clusterBits)
    let coverage = UInt64(clusterSize) << UInt64(l2Bits)
    var clusters: [UInt64: [UInt8]] = [:]
    for (i, cluster) in [0, 1, 5, coverage / UInt64(clusterSize) + 2, 3 * coverage / UInt64(clusterSize) - 1]
      .enumerated()
    {
      clusters[cluster] = (0..<clusterSize).map { UInt8(truncatingIfNeeded: $0 * 13 + i * 31 + 1) }
    }
    let builder = QCOW1Builder(
      size: 3 * coverage - 700, clusterBits: clusterBits, l2Bits: l2Bits, clusters: clusters)
    let image = scratch.file("g.qcow")
    try Data(builder.bytes()).write(to: URL(fileURLWithPath: image))
    if clusterBits == 9 { FuzzSeeds.keep(image, target: "FuzzQCOW1") }
    let chain = try openChain(image)
    #expect(chain.virtualSize == (3 * coverage - 700) / 512 * 512)
    #expect(try readAll(chain) == builder.content)
    #expect(try readAll(chain) == (try Qemu.rawContent(of: image, format: "qcow", scratch: scratch)))
  }

  /// qcow v1 mounts read-only: a writable open is refused with `.readOnly`, which makes a mount
  /// fall back to read-only and say why.
  @Test func writableOpenIsRefused() throws {
    let scratch = try Scratch("qcow1-rw")
    defer { scratch.remove() }
    let image = scratch.file("w.qcow")
    try Qemu.create(image, format: "qcow", size: "1M")
    expectVDiskError(.readOnly, [image, "writing qcow (version 1) images is not supported"]) {
      _ = try openWritable(image)
    }
  }
}
