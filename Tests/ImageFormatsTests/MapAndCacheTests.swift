import Foundation
import ImageFormats
import QCOW2
import TestSupport
import Testing
import VDiskCore

/// SEEK_DATA/SEEK_HOLE answers against `qemu-img map`, probing, raw layers, cache budgets.
@Suite struct MapAndCacheTests {
  /// Data runs found by alternating seekData / seekHole.
  func dataRunsBySeeking(_ chain: LayerChain) throws -> [ClosedRange<UInt64>] {
    var runs: [ClosedRange<UInt64>] = []
    var position: UInt64 = 0
    while let start = try chain.seekData(from: position) {
      let end = try #require(try chain.seekHole(from: start))
      #expect(end > start)
      runs.append(start...(end - 1))
      position = end
      if end >= chain.virtualSize { break }
    }
    return runs
  }

  /// `qemu-img map` data ranges with adjacent ones merged.
  func qemuDataRuns(_ image: String) throws -> [ClosedRange<UInt64>] {
    var runs: [ClosedRange<UInt64>] = []
    for e in try Qemu.map(image) where e.data {
      if let last = runs.last, last.upperBound + 1 == e.start {
        runs[runs.count - 1] = last.lowerBound...(e.start + e.length - 1)
      } else {
        runs.append(e.start...(e.start + e.length - 1))
      }
    }
    return runs
  }

  @Test func seekDataAndHoleMatchQemuImgMap() throws {
    let scratch = try Scratch("seek")
    defer { scratch.remove() }
    let base = scratch.file("base.qcow2")
    let top = scratch.file("top.qcow2")
    try Qemu.create(base, size: "6M", options: ["cluster_size=4096"])
    try Qemu.scatterPatterns(base, size: 6 << 20, count: 25, seed: 21)
    try Qemu.io(base, ["write -z 3M 512k"])
    try Qemu.create(top, size: "8M", backing: "base.qcow2", backingFormat: "qcow2")
    try Qemu.scatterPatterns(top, size: 8 << 20, count: 25, seed: 22)
    try Qemu.io(top, ["write -z 64k 192k", "write -c -P 0x3c 7M 128k", "write -z 5M 256k"])
    let chain = try openChain(top)
    #expect(try dataRunsBySeeking(chain) == qemuDataRuns(top))
    #expect(try chain.seekData(from: chain.virtualSize) == nil)
    #expect(try chain.seekHole(from: chain.virtualSize) == nil)
    try expectMatchesQemu(top, scratch: scratch)
  }

  @Test func rawLayerReportsHolesOfASparseFile() throws {
    let scratch = try Scratch("raw-holes")
    defer { scratch.remove() }
    let raw = scratch.file("disk.img")
    try sh("truncate -s 8M \(raw)")
    try Qemu.io(raw, format: "raw", ["write -P 0x12 1M 64k", "write -P 0x13 6M 1M"])
    let chain = try openChain(raw)
    #expect(chain.layers.map(\.formatName) == ["raw"])
    #expect(chain.virtualSize == 8 << 20)
    #expect(try dataRunsBySeeking(chain) == qemuDataRuns(raw))
    #expect(try chain.read(at: (1 << 20) - 1, count: 2) == [0, 0x12])
    let info = chain.top.info
    #expect(info.format == "raw")
    #expect(info.virtualSize == 8 << 20)
  }

  @Test func probing() throws {
    let scratch = try Scratch("probe")
    defer { scratch.remove() }
    let q = scratch.file("q")
    try Qemu.create(q, size: "1M")
    #expect(try ImageOpener.probe(ImageFile.open(q)).name == "qcow2")
    let r = scratch.file("r")
    try sh("head -c 4096 /dev/urandom > \(r); printf 'xx' | dd of=\(r) conv=notrunc status=none")
    #expect(try ImageOpener.probe(ImageFile.open(r)).name == "raw")
    let empty = scratch.file("e")
    try sh(": > \(empty)")
    #expect(try ImageOpener.probe(ImageFile.open(empty)).name == "raw")
    for format in ["vmdk", "vhdx", "vpc", "vdi", "qed", "qcow"] {
      let image = scratch.file("image.\(format)")
      try Qemu.create(image, format: format, size: "1M")
      #expect(try ImageOpener.probe(ImageFile.open(image)).name == format)
    }
    // A fixed VHD has its only footer at the end of the file; qemu probes it as raw, we do not.
    let fixed = scratch.file("fixed.vpc")
    try Qemu.create(fixed, format: "vpc", size: "1M", options: ["subformat=fixed"])
    #expect(try ImageOpener.probe(ImageFile.open(fixed)).name == "vpc")
    let cloop = scratch.file("c.cloop")
    try Data(Array("#!/bin/sh\n#V2.0 Format\n".utf8) + [UInt8](repeating: 0, count: 1000))
      .write(to: URL(fileURLWithPath: cloop))
    // cloop is read since issue 20: its magic probes as cloop (the header alone then fails to
    // plan, which the cloop suite covers).
    #expect(try ImageOpener.probe(ImageFile.open(cloop)).name == "cloop")
  }

  @Test func metadataCacheBudget() throws {
    let scratch = try Scratch("budget")
    defer { scratch.remove() }
    let base = scratch.file("base.qcow2")
    let top = scratch.file("top.qcow2")
    try Qemu.create(base, size: "4M", options: ["cluster_size=4096"])
    try Qemu.create(top, size: "4M", backing: "base.qcow2", backingFormat: "qcow2")
    let chain = try openChain(top)
    let topLayer = try #require(chain.layers[0] as? QCOW2Layer)
    let baseLayer = try #require(chain.layers[1] as? QCOW2Layer)
    // One cache for the chain: 4 MiB needs 2 L2 tables of 4 KiB below and 1 of 64 KiB on top.
    #expect(topLayer.metadataCache === baseLayer.metadataCache)
    #expect(topLayer.metadataCache.budget == 2 * 4096 + 65536)

    let big = scratch.file("big.qcow2")
    try Qemu.create(big, size: "1T")
    let bigLayer = try #require(try openChain(big).top as? QCOW2Layer)
    #expect(bigLayer.header.l2CoverageBytes == 128 << 20)
    #expect(bigLayer.metadataCache.budget == 32 << 20)

    let sized = try #require(try openChain(top, OpenOptions(cacheSize: 100_000)).top as? QCOW2Layer)
    #expect(sized.metadataCache.budget == 100_000)

    // The budget is honoured: reading a disk whose L2 tables need more than it holds evicts.
    let many = scratch.file("many.qcow2")
    try Qemu.create(many, size: "16M", options: ["cluster_size=4096"])
    try Qemu.io(many, (0..<8).map { "write -P \($0 + 1) \($0 * 2)M 4k" })
    let small = try openChain(many, OpenOptions(cacheSize: 3 * 4096))
    let smallLayer = try #require(small.top as? QCOW2Layer)
    _ = try readAll(small)
    #expect(smallLayer.metadataCache.count <= 3)
    #expect(smallLayer.metadataCache.totalCost <= 3 * 4096)
    #expect(smallLayer.metadataCache.statistics.evictions >= 5)
    try expectMatchesQemu(many, scratch: scratch)
  }
}
