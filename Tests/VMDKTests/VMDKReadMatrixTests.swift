import Foundation
import ImageFormats
import Synchronization
import TestSupport
import Testing
import VDiskCore
import VMDK

/// Every subformat qemu-img makes, patterned by qemu-io, read back and compared byte for byte
/// with `qemu-img convert -O raw`; allocation compared with `qemu-img map`.
@Suite struct VMDKReadMatrixTests {
  static let subformats = [
    "monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat",
  ]

  @Test(arguments: subformats)
  func scatteredWrites(subformat: String) throws {
    let scratch = try Scratch("vmdk-matrix")
    defer { scratch.remove() }
    let image = scratch.file("disk.vmdk")
    let size: UInt64 = 24 << 20
    try Qemu.create(image, format: "vmdk", size: "\(size)", options: ["subformat=\(subformat)"])
    try Qemu.scatterPatterns(image, format: "vmdk", size: size, count: 50, seed: UInt64(subformat.count))
    try Qemu.io(image, format: "vmdk", ["write -P 0x77 \(size - 4096) 4096", "write -z 8M 128k"])
    try expectMatchesQemu(image, scratch: scratch)
    let chain = try openChain(image)
    try expectSameDataRanges(image, chain)
    let raw = try Qemu.rawFile(of: image, scratch: scratch)
    try expectRangesMatch(chain, raw: raw, ranges: [(size - 512, 512)], random: 100, seed: 7)

    let info = chain.top.info
    #expect(info.format == "vmdk")
    #expect(info.virtualSize == size)
    #expect(info.formatSpecific.contains(InfoField("create-type", .string(subformat))))
    #expect(info.clusterSize == (subformat.hasSuffix("Sparse") ? 65536 : nil))
    let cid = try #require(try descriptorValue(image, "CID").flatMap { UInt32($0, radix: 16) })
    #expect(info.formatSpecific.contains(InfoField("cid", .integer(Int64(cid)))))
    #expect(info.formatSpecific.contains(InfoField("parent-cid", .integer(0xffff_ffff))))
  }

  /// A 5 GiB image split in 2 GiB extents: writes in extents 1 and 3 and across the boundary
  /// of extents 1 and 2, compared in ranges (the whole disk is too big to hold in memory).
  @Test(arguments: ["twoGbMaxExtentSparse", "twoGbMaxExtentFlat"])
  func largerThanTwoGiB(subformat: String) throws {
    let scratch = try Scratch("vmdk-5g")
    defer { scratch.remove() }
    let image = scratch.file("big.vmdk")
    let size: UInt64 = 5 << 30
    try Qemu.create(image, format: "vmdk", size: "\(size)", options: ["subformat=\(subformat)"])
    try Qemu.io(
      image, format: "vmdk",
      [
        "write -P 0x11 1M 192k", "write -P 0x12 \((2 << 30) - 65536) 131072",
        "write -P 0x13 \((4 << 30) + 12345 * 512) 300k",
        "write -P 0x14 \(size - 8192) 8192",
      ])
    let chain = try openChain(image)
    let layer = try #require(chain.top as? VMDKLayer)
    guard case .array(let extents)? = layer.info.formatSpecific.first(where: { $0.key == "extents" })?.value
    else {
      Issue.record("no extents in info")
      return
    }
    #expect(extents.count == 3)
    #expect(chain.virtualSize == size)
    let raw = try Qemu.rawFile(of: image, scratch: scratch)
    try expectRangesMatch(
      chain, raw: raw,
      ranges: [
        (0, 2 << 20), ((2 << 30) - (1 << 20), 2 << 20), ((4 << 30) + 12000 * 512, 1 << 20),
        (size - (1 << 20), 1 << 20),
      ], random: 60, seed: 5)
    try expectSameDataRanges(image, chain)
    // qemu-img allocates the first 4 KiB of a flat file (for alignment probing): data there.
    #expect(try chain.seekData(from: 0) == (subformat.hasSuffix("Flat") ? 0 : 1 << 20))
    #expect(try chain.seekData(from: 8192) == 1 << 20)
    #expect(try chain.seekHole(from: 1 << 20) == (1 << 20) + 196_608)
  }

  /// `zeroed_grain=on` (sparse version 2, flag bit 2): `write -z` leaves grain table entries of 1,
  /// which read as zeros and count as zero, not data.
  @Test func zeroedGrainEntries() throws {
    let scratch = try Scratch("vmdk-zeroed")
    defer { scratch.remove() }
    let image = scratch.file("z.vmdk")
    try Qemu.create(image, format: "vmdk", size: "8M", options: ["zeroed_grain=on"])
    try Qemu.io(image, format: "vmdk", ["write -P 0x42 0 4M", "write -z 1M 1M", "write -z 6M 256k"])
    try expectMatchesQemu(image, scratch: scratch)
    let chain = try openChain(image)
    try expectSameDataRanges(image, chain)
    #expect(try chain.top.extent(at: 1 << 20, maxLength: 4 << 20).mapping == .zero)
    #expect(try chain.top.extent(at: 1 << 20, maxLength: 4 << 20).length == 1 << 20)
    #expect(try chain.top.extent(at: 6 << 20, maxLength: 1 << 20).mapping == .zero)
    #expect(try chain.seekHole(from: 0) == 1 << 20)
    #expect(try chain.seekData(from: 1 << 20) == 2 << 20)
  }

  /// Adjacent grains qemu allocated in order come back as one host-contiguous extent.
  @Test func contiguousGrainsCoalesce() throws {
    let scratch = try Scratch("vmdk-coalesce")
    defer { scratch.remove() }
    let image = scratch.file("c.vmdk")
    try Qemu.create(image, format: "vmdk", size: "64M")
    try Qemu.io(image, format: "vmdk", ["write -P 0x42 0 40M"])
    let chain = try openChain(image)
    let e = try chain.top.extent(at: 0, maxLength: 64 << 20)
    #expect(e.length == 40 << 20)
    guard case .data = e.mapping else {
      Issue.record("expected data, got \(e.mapping)")
      return
    }
    #expect(try layerMap(chain.top).count == 2)
  }

  /// streamOptimized via `qemu-img convert` from a patterned qcow2: compressed grains with
  /// markers, inflated once per grain however small the reads.
  @Test func streamOptimized() throws {
    let scratch = try Scratch("vmdk-stream")
    defer { scratch.remove() }
    let source = scratch.file("src.qcow2")
    let size: UInt64 = (20 << 20) + 3 * 512  // not a multiple of the grain: a short last grain
    try Qemu.create(source, size: "\(size)")
    try Qemu.scatterPatterns(source, size: size, count: 40, seed: 99)
    try Qemu.io(source, ["write -P 0x5c \(size - 1536) 1536", "write -P 0x5d 0 1M"])
    let image = scratch.file("stream.vmdk")
    try Qemu.img(["convert", "-O", "vmdk", "-o", "subformat=streamOptimized", source, image])
    try expectMatchesQemu(image, scratch: scratch)
    let chain = try openChain(image)
    try expectSameDataRanges(image, chain)
    let layer = try #require(chain.top as? VMDKLayer)
    #expect(layer.info.formatSpecific.contains(InfoField("create-type", .string("streamOptimized"))))
    let before = layer.decompressionCount
    for i in 0..<64 { _ = try chain.read(at: UInt64(i) * 1024, count: 1024) }
    #expect(layer.decompressionCount == before + 1)
    guard case .compressed = try layer.extent(at: 0, maxLength: 1 << 20).mapping else {
      Issue.record("expected a compressed grain")
      return
    }
    #expect(try chain.read(at: size - 512, count: 512) == [UInt8](repeating: 0x5c, count: 512))
  }

  /// Many threads reading one image at once get the same bytes as one thread.
  @Test func concurrentReads() throws {
    let scratch = try Scratch("vmdk-concurrent")
    defer { scratch.remove() }
    let image = scratch.file("c.vmdk")
    try Qemu.create(image, format: "vmdk", size: "16M")
    try Qemu.scatterPatterns(image, format: "vmdk", size: 16 << 20, count: 40, seed: 3)
    let expected = try Qemu.rawContent(of: image, scratch: scratch)
    let chain = try openChain(image, OpenOptions(cacheSize: 8192))
    let failures = Mutex(0)
    DispatchQueue.concurrentPerform(iterations: 8) { worker in
      var rng = SplitMix64(seed: UInt64(worker))
      for _ in 0..<100 {
        let length = Int(1 + rng.next() % 200_000)
        let offset = Int(rng.next() % UInt64(expected.count - length))
        if (try? chain.read(at: UInt64(offset), count: length)) != Array(expected[offset..<offset + length]) {
          failures.withLock { $0 += 1 }
        }
      }
    }
    #expect(failures.withLock { $0 } == 0)
  }
}
