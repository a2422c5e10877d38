import Foundation
import ImageFormats
import QCOW2
import TestSupport
import Testing
import VDiskCore

/// Header parsing and `info`.
@Suite struct HeaderTests {
  @Test func fieldsOfAVersion3ImageWithBacking() throws {
    let scratch = try Scratch("header")
    defer { scratch.remove() }
    let base = scratch.file("base.raw")
    let image = scratch.file("top.qcow2")
    try sh("truncate -s 1M \(base)")
    try Qemu.create(
      image, size: "3M", options: ["cluster_size=65536", "lazy_refcounts=on", "refcount_bits=32"],
      backing: "base.raw", backingFormat: "raw")
    let file = try ImageFile.open(image)
    let header = try QCOW2Header(file: file)
    #expect(header.version == 3)
    #expect(header.clusterBits == 16)
    #expect(header.clusterSize == 65536)
    #expect(header.virtualSize == 3 << 20)
    #expect(header.backingFileName == "base.raw")
    #expect(header.backingFormat == "raw")
    #expect(header.externalDataFileName == nil)
    #expect(!header.dataFileIsRaw)
    #expect(header.hasLazyRefcounts)
    #expect(header.refcountOrder == 5)
    #expect(!header.featureNames.isEmpty)
    #expect(header.featureNames.name(type: .incompatible, bit: 0) == "dirty bit")
    // 3 MiB of 64 KiB clusters: 48 clusters, 8192 entries per L2 table → 1 table.
    #expect(header.l1EntriesNeeded == 1)
    #expect(header.l2CoverageBytes == 65536)

    let layer = try #require(try openChain(image).top as? QCOW2Layer)
    let info = layer.info
    #expect(info.format == "qcow2")
    #expect(info.filename == image)
    #expect(info.clusterSize == 65536)
    #expect(info.backingFilename == "base.raw")
    #expect(info.fullBackingFilename == base)
    #expect(info.backingFormat == "raw")
    #expect(info.dirtyFlag == false)
    let specific = Dictionary(uniqueKeysWithValues: info.formatSpecific.map { ($0.key, $0.value) })
    #expect(specific["compat"] == .string("1.1"))
    #expect(specific["compression-type"] == .string("zlib"))
    #expect(specific["lazy-refcounts"] == .bool(true))
    #expect(specific["refcount-bits"] == .integer(32))
    #expect(specific["corrupt"] == .bool(false))
    #expect(specific["extended-l2"] == .bool(false))
    #expect(specific["compatible-features"] == .array([.integer(0)]))
    #expect(specific["incompatible-features"] == .array([]))
  }

  @Test func coverageOfSmallClusters() throws {
    let scratch = try Scratch("header-small")
    defer { scratch.remove() }
    let image = scratch.file("s.qcow2")
    try Qemu.create(image, size: "3M", options: ["cluster_size=4096"])
    let header = try QCOW2Header(file: try ImageFile.open(image))
    // 3 MiB of 4 KiB clusters: 768 clusters, 512 entries per L2 table → 2 tables.
    #expect(header.l1EntriesNeeded == 2)
    #expect(header.l2CoverageBytes == 2 * 4096)
    // QEMU leaves out the feature name table when it does not fit a small first cluster.
    #expect(header.featureNames.isEmpty)
  }

  @Test func version2Image() throws {
    let scratch = try Scratch("header-v2")
    defer { scratch.remove() }
    let image = scratch.file("v2.qcow2")
    try Qemu.create(image, size: "1M", options: ["compat=0.10"])
    let header = try QCOW2Header(file: try ImageFile.open(image))
    #expect(header.version == 2)
    #expect(header.headerLength == 72)
    #expect(header.refcountOrder == 4)
    #expect(header.incompatibleFeatures == 0)
    #expect(QCOW2Header.hasMagic([0x51, 0x46, 0x49, 0xFB]))
    #expect(!QCOW2Header.hasMagic([0x51, 0x46, 0x49]))
    #expect(!QCOW2Header.hasMagic(Array("KDMV".utf8)))
  }

  @Test func dirtyBitReadsFineAndCorruptBitWarns() throws {
    let scratch = try Scratch("header-bits")
    defer { scratch.remove() }
    let image = scratch.file("d.qcow2")
    try Qemu.create(image, size: "1M")
    try Qemu.io(image, ["write -P 0x61 0 64k"])
    try patch(image, at: 72, 0b11, width: 8)  // dirty + corrupt
    let chain = try openChain(image)
    let layer = try #require(chain.top as? QCOW2Layer)
    #expect(layer.header.isDirty)
    #expect(layer.header.isCorrupt)
    #expect(layer.info.dirtyFlag == true)
    #expect(try chain.read(at: 0, count: 2) == [0x61, 0x61])
  }
}
