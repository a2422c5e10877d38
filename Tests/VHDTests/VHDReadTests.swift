import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore
import VHD

/// qemu-made vpc images read byte for byte as `qemu-img convert` reads them.
@Suite struct VHDReadTests {
  static let patterns = [
    "write -P 0x11 0 4k", "write -P 0x22 1000k 1536k", "write -P 0x33 5M 512", "write -P 0x44 7340032 65536",
  ]

  @Test(arguments: ["dynamic", "fixed"], ["on", "off"])
  func patternsMatchQemu(subformat: String, forceSize: String) throws {
    let scratch = try Scratch("vpc-read")
    defer { scratch.remove() }
    let image = scratch.file("disk.vhd")
    try Qemu.create(
      image, format: "vpc", size: "9000000", options: ["subformat=\(subformat)", "force_size=\(forceSize)"])
    try Qemu.io(image, format: "vpc", Self.patterns)
    try Qemu.scatterPatterns(image, format: "vpc", size: 8 << 20, count: 20, seed: 5)
    // qemu reports a fixed VHD's holes from the host file; we call all of it data.
    try expectSameAsQemu(image, format: "vpc", scratch: scratch, compareMap: subformat == "dynamic")
    let layer = try #require(try openChain(image).top as? VHDLayer)
    #expect(layer.info.format == "vpc")
    #expect(layer.info.clusterSize == (subformat == "dynamic" ? 2 << 20 : nil))
  }

  @Test func emptyDynamicDiskIsAllHoles() throws {
    let scratch = try Scratch("vpc-empty")
    defer { scratch.remove() }
    let image = scratch.file("empty.vhd")
    try Qemu.create(image, format: "vpc", size: "5M")
    try expectSameAsQemu(image, format: "vpc", scratch: scratch)
    let chain = try openChain(image)
    #expect(try chain.allocatedBytes() == 0)
  }

  /// Virtual sizes of odd sizes, with force_size on (creator "qem2": current_size) and off
  /// (creator "qemu": CHS), and past the largest CHS geometry, equal qemu-img info's.
  @Test func virtualSizesMatchQemuInfo() throws {
    let scratch = try Scratch("vpc-sizes")
    defer { scratch.remove() }
    let sizes = ["1000000", "1048577", "33554943", "104857600", "1234567890", "140G"]
    for size in sizes {
      for force in ["on", "off"] {
        for subformat in ["dynamic", "fixed"] where subformat == "dynamic" || size != "140G" {
          let image = scratch.file("s-\(size)-\(force)-\(subformat).vhd")
          try Qemu.create(
            image, format: "vpc", size: size, options: ["subformat=\(subformat)", "force_size=\(force)"])
          let chain = try openChain(image)
          let qemu = try qemuVirtualSize(image, format: "vpc")
          #expect(chain.virtualSize == qemu, "\(size) force_size=\(force) \(subformat)")
          try FileManager.default.removeItem(atPath: image)
        }
      }
    }
  }

  /// vhd-notes.md, "Which size is the disk?": the creator application decides between CHS and
  /// current_size. (qemu's force_size=on writes the maximum geometry, which always means
  /// current_size, so the test makes current_size 4 KiB larger than the CHS size instead.)
  @Test func creatorApplicationPicksTheSizeLikeQemu() throws {
    let scratch = try Scratch("vpc-creator")
    defer { scratch.remove() }
    let image = scratch.file("c.vhd")
    try Qemu.create(image, format: "vpc", size: "10000000", options: ["force_size=off"])
    let chs = try field(image, at: 48, width: 8)
    try patchFooters(image, at: 48, bytes: bigEndian(chs + 4096, width: 8))
    let creators: [(String, [UInt8], Bool)] = [
      ("vpc ", Array("vpc ".utf8), true), ("qemu", Array("qemu".utf8), true),
      ("qem2", Array("qem2".utf8), false),
      ("win ", Array("win ".utf8), false), ("d2v ", Array("d2v ".utf8), false),
      ("tap\\0", [0x74, 0x61, 0x70, 0], false), ("CTXS", Array("CTXS".utf8), false),
      ("vs  ", Array("vs  ".utf8), true),
    ]
    var sizes = Set<UInt64>()
    for (name, bytes, chs) in creators {
      try patchFooters(image, at: 28, bytes: bytes)
      let chain = try openChain(image)
      let qemu = try qemuVirtualSize(image, format: "vpc")
      #expect(chain.virtualSize == qemu, "creator \(name)")
      let layer = try #require(chain.top as? VHDLayer)
      #expect(layer.footer.sizeFromGeometry == chs, "creator \(name)")
      sizes.insert(chain.virtualSize)
    }
    #expect(sizes.count == 2)
  }

  @Test func damagedEndFooterFallsBackToTheCopy() throws {
    let scratch = try Scratch("vpc-copy")
    defer { scratch.remove() }
    let image = scratch.file("d.vhd")
    try Qemu.create(image, format: "vpc", size: "4M")
    try Qemu.io(image, format: "vpc", ["write -P 0x5c 1M 1M"])
    let expected = try Qemu.rawContent(of: image, format: "vpc", scratch: scratch)
    let end = try fileSize(image) - 512
    try patch(image, at: end + 40, 0xDEAD, width: 2)  // checksum no longer matches
    let chain = try openChain(image)
    #expect(try readAll(chain) == expected)
    let layer = try #require(chain.top as? VHDLayer)
    #expect(layer.footer.location == 0)
  }

  /// A sector bitmap is honoured in a dynamic disk: a clear bit reads as zeros whatever the
  /// block holds (vhd.asciidoc, "Sector bitmap"; qemu ignores the bitmap when reading).
  @Test func clearBitmapBitsReadAsZerosInADynamicDisk() throws {
    let scratch = try Scratch("vpc-bitmap")
    defer { scratch.remove() }
    let image = scratch.file("b.vhd")
    try Qemu.create(image, format: "vpc", size: "4M")
    try Qemu.io(image, format: "vpc", ["write -P 0x66 2M 2M"])
    let bat = try field(image, at: 512 + 16, width: 8)
    let block = try field(image, at: bat + 4, width: 4) * 512
    // Clear the bits of sectors 8..15 (byte 1) and sector 0 (bit 7 of byte 0).
    try patch(image, at: block, bytes: [0x7F, 0x00])
    let chain = try openChain(image)
    let bytes = try chain.read(at: 2 << 20, count: 16 * 512)
    #expect(bytes[0..<512].allSatisfy { $0 == 0 })
    #expect(bytes[512..<4096].allSatisfy { $0 == 0x66 })
    #expect(bytes[4096..<8192].allSatisfy { $0 == 0 })
    let e = try chain.top.extent(at: 2 << 20, maxLength: 2 << 20)
    #expect(e.mapping == .zero && e.length == 512)
  }

  /// qcow2 over vpc, through the opener (qemu-img create -b base.vhd -F vpc).
  @Test(arguments: ["dynamic", "fixed"])
  func qcow2OverVpc(subformat: String) throws {
    let scratch = try Scratch("vpc-chain")
    defer { scratch.remove() }
    let base = scratch.file("base.vhd")
    let top = scratch.file("top.qcow2")
    try Qemu.create(base, format: "vpc", size: "6M", options: ["subformat=\(subformat)"])
    try Qemu.io(base, format: "vpc", ["write -P 0x1a 0 3M", "write -P 0x1b 5M 100k"])
    let size = try qemuVirtualSize(base, format: "vpc")
    try Qemu.create(top, size: "\(size)", backing: "base.vhd", backingFormat: "vpc")
    try Qemu.io(top, ["write -P 0x2a 1M 64k", "write -z 2M 64k"])
    let expected = try Qemu.rawContent(of: top, scratch: scratch)
    let chain = try openChain(top)
    #expect(chain.layers.map(\.formatName) == ["qcow2", "vpc"])
    #expect(try readAll(chain) == expected)
  }
}
