import Foundation
import ImageFormats
import TestSupport
import Testing
import VDI
import VDiskCore

/// qemu-made vdi images (and hand-made ones for what qemu does not write) read byte for byte.
@Suite struct VDIReadTests {
  @Test(arguments: ["on", "off"])
  func patternsMatchQemu(staticImage: String) throws {
    let scratch = try Scratch("vdi-read")
    defer { scratch.remove() }
    let image = scratch.file("disk.vdi")
    try Qemu.create(image, format: "vdi", size: "7000000", options: ["static=\(staticImage)"])
    try Qemu.io(
      image, format: "vdi",
      [
        "write -P 0x11 0 4k", "write -P 0x22 1000k 1536k", "write -P 0x33 5M 512",
        "write -P 0x44 6815744 65536",
      ])
    try Qemu.scatterPatterns(image, format: "vdi", size: 6 << 20, count: 20, seed: 3)
    try expectSameAsQemu(image, format: "vdi", scratch: scratch)
    let layer = try #require(try openChain(image).top as? VDILayer)
    #expect(layer.info.format == "vdi")
    #expect(layer.info.clusterSize == 1 << 20)
    if staticImage == "on" {
      // Slots follow each other: the whole disk is one host run.
      let e = try layer.extent(at: 0, maxLength: layer.virtualSize)
      #expect(e.length == layer.virtualSize)
    }
  }

  @Test func sizesMatchQemuInfo() throws {
    let scratch = try Scratch("vdi-sizes")
    defer { scratch.remove() }
    for size in ["1", "1000000", "1048577", "33554943", "1234567890", "3T"] {
      let image = scratch.file("s-\(size).vdi")
      try Qemu.create(image, format: "vdi", size: size)
      #expect(try openChain(image).virtualSize == (try qemuVirtualSize(image, format: "vdi")), "\(size)")
      try FileManager.default.removeItem(atPath: image)
    }
  }

  /// cbBlockExtra, zero-marked blocks, slots out of order, a size not a multiple of 512 and a
  /// block size other than 1 MiB (vdi.md, "Block map").
  @Test(arguments: [true, false])
  func handMadeImages(version1: Bool) throws {
    let scratch = try Scratch("vdi-hand")
    defer { scratch.remove() }
    let block = 64 << 10
    var slots: [[UInt8]] = []
    for i in 0..<3 { slots.append((0..<block).map { UInt8(truncatingIfNeeded: $0 * 7 + i * 50 + 1) }) }
    let builder = VDIBuilder(
      version1: version1, diskSize: UInt64(5 * block - 300), blockSize: UInt32(block),
      blockExtra: version1 ? 512 : 0, map: [2, 0xFFFF_FFFF, 0, 0xFFFF_FFFE, 1], slots: slots)
    let image = scratch.file("hand.vdi")
    try builder.write(to: image)
    let chain = try openChain(image)
    let expected = builder.content
    #expect(chain.virtualSize == UInt64(5 * block - 300 + 511) / 512 * 512)
    #expect(try readAll(chain) == expected)
    let kinds = try layerMap(chain.top).map(\.kind)
    #expect(kinds == [.data, .unallocated, .data, .zero, .data])
    if version1, (try? Qemu.img("info", "-f", "vdi", image)) != nil {
      // qemu reads what it accepts; where it does, it agrees.
      if let qemu = try? Qemu.rawContent(of: image, format: "vdi", scratch: scratch) {
        #expect(qemu == expected)
      }
    }
  }

  /// qcow2 over vdi, through the opener (qemu-img create -b base.vdi -F vdi).
  @Test(arguments: ["on", "off"])
  func qcow2OverVdi(staticImage: String) throws {
    let scratch = try Scratch("vdi-chain")
    defer { scratch.remove() }
    let base = scratch.file("base.vdi")
    let top = scratch.file("top.qcow2")
    try Qemu.create(base, format: "vdi", size: "5M", options: ["static=\(staticImage)"])
    try Qemu.io(base, format: "vdi", ["write -P 0x1a 0 3M", "write -P 0x1b 4M 100k"])
    try Qemu.create(top, size: "5M", backing: "base.vdi", backingFormat: "vdi")
    try Qemu.io(top, ["write -P 0x2a 1M 64k", "write -z 2M 64k"])
    let expected = try Qemu.rawContent(of: top, scratch: scratch)
    let chain = try openChain(top)
    #expect(chain.layers.map(\.formatName) == ["qcow2", "vdi"])
    #expect(try readAll(chain) == expected)
  }
}
