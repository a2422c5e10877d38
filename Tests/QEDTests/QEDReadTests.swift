import Foundation
import ImageFormats
import QED
import TestSupport
import Testing
import VDiskCore

/// qemu-made QED images read byte for byte as `qemu-img convert -O raw` reads them.
@Suite struct QEDReadTests {
  /// Cluster sizes 4 KiB to 1 MiB, table sizes 2 to 16 (QEMU 7.2 cannot open table_size=1
  /// images it creates: its table offset check treats a one-cluster table as an overflow).
  @Test(arguments: [(4096, 2), (4096, 16), (65536, 4), (65536, 2), (1 << 20, 4)])
  func patternsMatchQemu(clusterSize: Int, tableSize: Int) throws {
    let scratch = try Scratch("qed-read")
    defer { scratch.remove() }
    let image = scratch.file("disk.qed")
    let size: UInt64 = 23 << 20
    try Qemu.create(
      image, format: "qed", size: "\(size)",
      options: ["cluster_size=\(clusterSize)", "table_size=\(tableSize)"])
    try Qemu.io(
      image, format: "qed",
      [
        "write -P 0x11 0 4k", "write -P 0x22 1000k 1536k", "write -P 0x33 5M 512",
        "write -P 0x44 \(size - 65536) 65536",
      ]
    )
    try Qemu.scatterPatterns(
      image, format: "qed", size: size, count: 25, seed: UInt64(clusterSize + tableSize))
    try expectSameAsQemu(image, format: "qed", scratch: scratch)
    let layer = try #require(try openChain(image).top as? QEDLayer)
    #expect(layer.info.format == "qed")
    #expect(layer.info.clusterSize == UInt64(clusterSize))
    #expect(layer.header.tableSize == UInt32(tableSize))
    #expect(QEDDriver.matches(try ProbeBytes(ImageFile.open(image))))
  }

  /// Zero clusters (`write -z` of whole clusters makes L2 entries of 1) read as zeros over a
  /// backing file that has data there; unallocated clusters show the backing file.
  @Test func zeroClustersHideTheBackingFile() throws {
    let scratch = try Scratch("qed-zero")
    defer { scratch.remove() }
    let base = scratch.file("base.raw")
    let top = scratch.file("top.qed")
    try Qemu.create(base, format: "raw", size: "4M")
    try Qemu.io(base, format: "raw", ["write -P 0x5b 0 4M"])
    try Qemu.create(top, format: "qed", size: "4M", backing: "base.raw", backingFormat: "raw")
    try Qemu.io(top, format: "qed", ["write -z 64k 128k", "write -P 0x6c 1M 4k", "write -z 2M 64k"])
    try expectSameAsQemu(top, format: "qed", scratch: scratch)
    let chain = try openChain(top)
    #expect(try chain.read(at: 64 << 10, count: 128 << 10).allSatisfy { $0 == 0 })
    #expect(try chain.read(at: 0, count: 4096).allSatisfy { $0 == 0x5b })
    let kinds = try layerMap(chain.top).map(\.kind)
    #expect(kinds.contains(.zero))
  }

  /// QED_F_BACKING_FORMAT_NO_PROBE: a raw backing file whose first bytes are a qcow2 header is
  /// still read as raw (it would probe as qcow2); without the bit the backing file is probed.
  @Test func rawBackingFormatIsNotProbed() throws {
    let scratch = try Scratch("qed-noprobe")
    defer { scratch.remove() }
    let base = scratch.file("base.raw")
    let top = scratch.file("top.qed")
    try Qemu.create(base, format: "raw", size: "2M")
    let qcow2 = scratch.file("q.qcow2")
    try Qemu.create(qcow2, size: "1M")
    let head = try [UInt8](Data(contentsOf: URL(fileURLWithPath: qcow2)).prefix(512))
    try patch(base, at: 0, bytes: head)
    try Qemu.create(top, format: "qed", size: "2M", backing: "base.raw", backingFormat: "raw")
    #expect(try qedFeatures(top) & 0x5 == 0x5)
    let chain = try openChain(top)
    #expect(chain.layers.map(\.formatName) == ["qed", "raw"])
    #expect(try chain.read(at: 0, count: 512) == head)
    #expect(chain.top.info.backingFormat == "raw")
  }

  /// raw ← QED ← qcow2, and qcow2 ← QED (a probed backing file): the chain opens and reads as
  /// qemu reads it.
  @Test func chainsMatchQemu() throws {
    let scratch = try Scratch("qed-chain")
    defer { scratch.remove() }
    let base = scratch.file("base.raw")
    let middle = scratch.file("mid.qed")
    let top = scratch.file("top.qcow2")
    try Qemu.create(base, format: "raw", size: "6M")
    try Qemu.io(base, format: "raw", ["write -P 0x1a 0 6M"])
    try Qemu.create(middle, format: "qed", size: "6M", backing: "base.raw", backingFormat: "raw")
    try Qemu.io(
      middle, format: "qed", ["write -P 0x2b 1M 100k", "write -z 3M 64k", "write -P 0x2c 5000k 3k"])
    try Qemu.create(top, size: "6M", backing: "mid.qed", backingFormat: "qed")
    try Qemu.io(top, ["write -P 0x3c 1050k 8k", "write -z 5M 64k"])
    let chain = try openChain(top)
    #expect(chain.layers.map(\.formatName) == ["qcow2", "qed", "raw"])
    #expect(try readAll(chain) == (try Qemu.rawContent(of: top, scratch: scratch)))

    let q2base = scratch.file("b.qcow2")
    let over = scratch.file("over.qed")
    try Qemu.create(q2base, size: "3M")
    try Qemu.io(q2base, ["write -P 0x4d 0 3M"])
    try Qemu.create(over, format: "qed", size: "3M", backing: "b.qcow2", backingFormat: "qcow2")
    try Qemu.io(over, format: "qed", ["write -P 0x4e 100k 10k"])
    #expect(try qedFeatures(over) & 0x4 == 0)
    #expect(try openChain(over).layers.map(\.formatName) == ["qed", "qcow2"])
    try expectSameAsQemu(over, format: "qed", scratch: scratch)
  }

  /// The opener probes QED by its magic, and info says what qemu-img info says.
  @Test func probedAndDescribed() throws {
    let scratch = try Scratch("qed-probe")
    defer { scratch.remove() }
    let image = scratch.file("p.qed")
    try Qemu.create(image, format: "qed", size: "1G", options: ["cluster_size=65536"])
    #expect(try FormatRegistry.standard.probe(ImageFile.open(image)) == QEDDriver.self)
    let chain = try openChain(image)
    #expect(chain.virtualSize == (try qemuVirtualSize(image, format: "qed")))
    #expect(chain.top.info.dirtyFlag == false)
    let other = scratch.file("o.qcow2")
    try Qemu.create(other, size: "1M")
    #expect(!QEDDriver.matches(try ProbeBytes(ImageFile.open(other))))
  }
}
