import ImageFormats
import TestSupport
import Testing
import VDiskCore

@testable import VHDX

/// qemu-made images read through the opener, compared byte for byte with `qemu-img convert`.
@Suite struct VHDXReadTests {
  static let matrix: [(subformat: String, blockSize: String)] = [
    ("dynamic", "1M"), ("dynamic", "32M"), ("fixed", "1M"), ("fixed", "32M"),
  ]

  @Test(arguments: matrix)
  func scatteredWritesMatchQemu(subformat: String, blockSize: String) throws {
    let scratch = try Scratch("vhdx-matrix")
    defer { scratch.remove() }
    let image = scratch.file("disk.vhdx")
    let size: UInt64 = blockSize == "32M" ? 72 << 20 : 12 << 20
    try Qemu.create(
      image, format: "vhdx", size: "\(size)",
      options: ["subformat=\(subformat)", "block_size=\(blockSize)", "log_size=1M"])
    try Qemu.scatterPatterns(
      image, format: "vhdx", size: size, count: 40, seed: UInt64(size) &+ UInt64(subformat.count))
    try Qemu.io(
      image, format: "vhdx", ["write -z 2M 1M", "write -P 0x77 \(size - 4096) 4096", "write -P 0x78 5M 1536"])
    try expectMatchesQemu(image, scratch: scratch)

    let chain = try openChain(image)
    let layer = try #require(chain.top as? VHDXLayer)
    #expect(layer.metadata.blockSize == (blockSize == "32M" ? 32 << 20 : 1 << 20))
    #expect(layer.metadata.leaveBlocksAllocated == (subformat == "fixed"))
    #expect(layer.replayedLogEntries == 0)
    #expect(!layer.metadata.hasParent)
    // The BAT is small enough to be held whole; with a budget too small for it, it is read page
    // by page through the cache, and the bytes are the same.
    #expect(layer.bat.resident?.count == Int(layer.bat.entryCount))
    let paged = try openChain(image, OpenOptions(cacheSize: 0))
    #expect(try #require(paged.top as? VHDXLayer).bat.resident == nil)
    #expect(firstDifference(try readAll(paged), try readAll(chain)) == nil)
  }

  @Test func randomRangeReads() throws {
    let scratch = try Scratch("vhdx-random")
    defer { scratch.remove() }
    let image = scratch.file("r.vhdx")
    let size: UInt64 = 10 << 20
    try Qemu.create(image, format: "vhdx", size: "\(size)", options: ["block_size=1M"])
    try Qemu.scatterPatterns(image, format: "vhdx", size: size, count: 50, seed: 7, maxUnits: 4096)
    let expected = try Qemu.rawContent(of: image, scratch: scratch)
    let chain = try openChain(image)
    var rng = SplitMix64(seed: 99)
    for _ in 0..<300 {
      let offset = rng.next() % size
      let count = Int(1 + rng.next() % (3 << 20))
      let got = try chain.read(at: offset, count: count)
      let end = min(Int(offset) + count, Int(size))
      #expect(got == Array(expected[Int(offset)..<end]), "read \(count) at \(hex(offset))")
    }
  }

  /// qemu's map says "all data" for VHDX (it has no block status), so the oracle for holes is its
  /// content: every hole we report reads as zeros in qemu's conversion, and every block written
  /// with a non-zero pattern is data.
  @Test func seekDataAndHoleAgreeWithContentAndBAT() throws {
    let scratch = try Scratch("vhdx-seek")
    defer { scratch.remove() }
    let image = scratch.file("s.vhdx")
    try Qemu.create(image, format: "vhdx", size: "16M", options: ["block_size=1M"])
    try Qemu.io(
      image, format: "vhdx",
      ["write -P 0x31 1M 512", "write -P 0x32 4M 2M", "write -z 8M 1M", "write -P 0x33 15M 1M"])
    let expected = try Qemu.rawContent(of: image, scratch: scratch)
    let chain = try openChain(image)
    #expect(try chain.seekData(from: 0) == 1 << 20)
    #expect(try chain.seekHole(from: 1 << 20) == 2 << 20)
    #expect(try chain.seekData(from: 2 << 20) == 4 << 20)
    #expect(try chain.seekHole(from: 4 << 20) == 6 << 20)
    // qemu's `write -z` on a block it never allocated writes a block of zeros (FULLY_PRESENT).
    #expect(try chain.seekData(from: 6 << 20) == 8 << 20)
    #expect(try chain.seekHole(from: 8 << 20) == 9 << 20)
    #expect(try chain.seekData(from: 9 << 20) == 15 << 20)
    #expect(try chain.seekHole(from: 15 << 20) == 16 << 20)
    var position: UInt64 = 0
    while position < chain.virtualSize {
      let s = try chain.status(at: position, maxLength: chain.virtualSize - position)
      if !s.isData {
        let range = Int(position)..<Int(position + s.length)
        #expect(expected[range].allSatisfy { $0 == 0 }, "hole \(hex(position)) holds data in qemu's view")
      }
      position += s.length
    }
    // Data runs are host-contiguous maximal runs: 4M..6M was allocated in one go.
    let run = try chain.top.extent(at: 4 << 20, maxLength: 12 << 20)
    #expect(run.length == 2 << 20)
  }

  @Test func fourKiBLogicalSectors() throws {
    let scratch = try Scratch("vhdx-4k")
    defer { scratch.remove() }
    let image = scratch.file("4k.vhdx")
    try Qemu.create(image, format: "vhdx", size: "8M", options: ["block_size=1M"])
    try Qemu.io(
      image, format: "vhdx", ["write -P 0x41 0 4096", "write -P 0x42 3M 1M", "write -P 0x43 7M 8k"])
    // qemu-img create has no logical_sector_size option and qemu 7.2 refuses to read 4096-byte
    // sectors: patch the metadata item (no checksum) and compare with the content before.
    let expected = try Qemu.rawContent(of: image, scratch: scratch)
    let layer = try #require(try openChain(image).top as? VHDXLayer)
    #expect(layer.metadata.logicalSectorSize == 512)
    let region = layer.regions.metadata
    let table = try readFile(image, at: region.offset, count: 64 << 10)
    let id = VHDXMetadata.logicalSectorSize.bytes
    let entry = try #require(
      (0..<Int(table.le(10, width: 2))).first { Array(table[32 + 32 * $0..<48 + 32 * $0]) == id })
    let itemOffset = table.le(32 + 32 * entry + 16, width: 4)
    try patchLE(image, at: region.offset + itemOffset, 4096, width: 4)

    let patched = try #require(try openChain(image).top as? VHDXLayer)
    #expect(patched.metadata.logicalSectorSize == 4096)
    #expect(patched.bat.chunkRatio == 32768)
    #expect(patched.info.formatSpecific.contains(InfoField("logical-sector-size", .integer(4096))))
    #expect(firstDifference(try readAll(openChain(image)), expected) == nil)
  }

  @Test func infoFields() throws {
    let scratch = try Scratch("vhdx-info")
    defer { scratch.remove() }
    let image = scratch.file("i.vhdx")
    try Qemu.create(image, format: "vhdx", size: "3M", options: ["block_size=1M"])
    let info = try openChain(image).top.info
    #expect(info.format == "vhdx")
    #expect(info.virtualSize == 3 << 20)
    #expect(info.clusterSize == 1 << 20)
    #expect(info.backingFilename == nil)
    let keys = info.formatSpecific.map(\.key)
    for key in ["block-size", "logical-sector-size", "physical-sector-size", "has-parent", "log-replayed"] {
      #expect(keys.contains(key))
    }
    #expect(info.formatSpecific.contains(InfoField("log-replayed", .bool(false))))
  }

  @Test func qcow2OverVHDXThroughTheOpener() throws {
    let scratch = try Scratch("vhdx-mixed")
    defer { scratch.remove() }
    let base = scratch.file("base.vhdx")
    let top = scratch.file("top.qcow2")
    try Qemu.create(base, format: "vhdx", size: "6M", options: ["block_size=1M"])
    try Qemu.io(base, format: "vhdx", ["write -P 0x51 0 6M", "write -z 2M 1M"])
    try Qemu.create(top, size: "6M", backing: "base.vhdx", backingFormat: "vhdx")
    try Qemu.io(top, ["write -P 0x52 1M 64k", "write -z 4M 64k"])
    try expectMatchesQemu(top, scratch: scratch)
    let chain = try openChain(top)
    #expect(chain.layers.map(\.formatName) == ["qcow2", "vhdx"])
  }
}

/// A 64 TiB empty disk: opening and asking where data is stay cheap (one BAT pass, no big
/// allocation).
@Suite struct VHDXLargeDiskTests {
  @Test func emptySixtyFourTiBDisk() throws {
    let scratch = try Scratch("vhdx-64t")
    defer { scratch.remove() }
    let image = scratch.file("big.vhdx")
    try Qemu.create(image, format: "vhdx", size: "64T")
    try Qemu.io(image, format: "vhdx", ["write -P 0x5F 40T 4k"])
    let chain = try openChain(image)
    #expect(chain.virtualSize == 64 << 40)
    #expect(try chain.seekData(from: 0) == 40 << 40)
    #expect(try chain.read(at: (40 << 40) + 4095, count: 2) == [0x5F, 0])
  }
}
