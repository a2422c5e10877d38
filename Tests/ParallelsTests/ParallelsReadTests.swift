import Foundation
import ImageFormats
import Parallels
import TestSupport
import Testing
import VDiskCore

/// qemu-made Parallels images, and hand-made ones for what qemu does not write (the old
/// "WithoutFreeSpace" signature, clusters out of order), read byte for byte as qemu reads them.
@Suite struct ParallelsReadTests {
  @Test(arguments: ["1M", "64k", "4k"])
  func patternsMatchQemu(clusterSize: String) throws {
    let scratch = try Scratch("prl-read")
    defer { scratch.remove() }
    let image = scratch.file("disk.hds")
    try Qemu.create(image, format: "parallels", size: "9000K", options: ["cluster_size=\(clusterSize)"])
    try Qemu.io(
      image, format: "parallels",
      ["write -P 0x11 0 4k", "write -P 0x22 1000k 1536k", "write -P 0x33 5M 512", "write -P 0x44 8998k 2k"])
    try Qemu.scatterPatterns(image, format: "parallels", size: 9000 << 10, count: 20, seed: 3)
    try expectSameAsQemu(image, format: "parallels", scratch: scratch)
    let layer = try #require(try openChain(image).top as? ParallelsLayer)
    #expect(layer.info.format == "parallels")
    #expect(try FormatRegistry.standard.probe(ImageFile.open(image)).name == "parallels")
    #expect(layer.info.dirtyFlag == false)
  }

  /// A fully written image ("plain": every cluster allocated, in order) is one host run.
  @Test func fullyAllocatedImageIsOneRun() throws {
    let scratch = try Scratch("prl-plain")
    defer { scratch.remove() }
    let image = scratch.file("plain.hds")
    try Qemu.create(image, format: "parallels", size: "4M", options: ["cluster_size=256k"])
    try Qemu.io(image, format: "parallels", ["write -P 0x5c 0 4M"])
    try expectSameAsQemu(image, format: "parallels", scratch: scratch)
    let layer = try #require(try openChain(image).top as? ParallelsLayer)
    let e = try layer.extent(at: 0, maxLength: layer.virtualSize)
    #expect(e.length == layer.virtualSize)
    #expect(e.mapping == .data(hostOffset: 256 << 10))
  }

  /// Both signatures by the spec: the BAT counts sectors ("WithoutFreeSpace", where only the low
  /// 32 bits of nb_sectors count) or clusters; clusters out of order, holes, a size not a whole
  /// number of clusters and a BAT shorter than the disk.
  @Test(arguments: [true, false])
  func handMadeImagesMatchQemu(clustersSignature: Bool) throws {
    let scratch = try Scratch("prl-hand")
    defer { scratch.remove() }
    var builder = ParallelsBuilder(
      clustersSignature: clustersSignature, sectors: 5 * 128 + 77, map: [2, nil, 0, 1, nil],
      slots: ParallelsBuilder.patterned(3, clusterSize: 128 * 512, seed: 9))
    let image = scratch.file("hand.hds")
    try builder.write(to: image)
    let chain = try openChain(image)
    #expect(chain.virtualSize == (5 * 128 + 77) * 512)
    #expect(try readAll(chain) == builder.content)
    #expect(try layerMap(chain.top).map(\.kind) == [.data, .unallocated, .data, .unallocated])
    #expect(try Qemu.rawContent(of: image, format: "parallels", scratch: scratch) == builder.content)
    if !clustersSignature {
      // The high half of nb_sectors does not count for the old signature.
      builder.sectors |= 1 << 40
      try builder.write(to: image)
      #expect(try openChain(image).virtualSize == (5 * 128 + 77) * 512)
      #expect(try qemuVirtualSize(image, format: "parallels") == (5 * 128 + 77) * 512)
    }
  }

  /// An image left open read-write (in_use set) still reads; `info` says it is dirty.
  @Test func dirtyImageReads() throws {
    let scratch = try Scratch("prl-dirty")
    defer { scratch.remove() }
    let image = scratch.file("dirty.hds")
    try Qemu.create(image, format: "parallels", size: "2M")
    try Qemu.io(image, format: "parallels", ["write -P 0x71 4096 8192"])
    try patchLE(image, at: 44, 0x746F_6E59, width: 4)
    try expectSameAsQemu(image, format: "parallels", scratch: scratch)
    #expect(try openChain(image).top.info.dirtyFlag == true)
  }

  /// A qcow2 over a Parallels image reads through to it.
  @Test func qcow2OverParallels() throws {
    let scratch = try Scratch("prl-chain")
    defer { scratch.remove() }
    let base = scratch.file("base.hds")
    let top = scratch.file("top.qcow2")
    try Qemu.create(base, format: "parallels", size: "3M")
    try Qemu.io(base, format: "parallels", ["write -P 0x21 0 3M"])
    try Qemu.create(top, size: "3M", backing: base, backingFormat: "parallels")
    try Qemu.io(top, ["write -P 0x22 1M 4k"])
    try expectSameAsQemu(top, format: "qcow2", scratch: scratch)
    #expect(try openChain(top).top.backing?.formatName == "parallels")
  }
}
