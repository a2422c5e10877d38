import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore

@testable import VHDX

/// Damaged images: a clear `VDiskError` naming the file and the fault, or EIO on the read; never
/// a crash, a hang or a huge allocation.
@Suite struct HostileVHDXTests {
  /// A small qemu-made dynamic image with data in blocks 0 and 2, and its parsed layout.
  static func image(_ scratch: Scratch) throws -> (path: String, layer: VHDXLayer) {
    let path = scratch.file("h.vhdx")
    try Qemu.create(path, format: "vhdx", size: "4M", options: ["block_size=1M", "log_size=1M"])
    try Qemu.io(path, format: "vhdx", ["write -P 0x21 0 1M", "write -P 0x22 2M 4k"])
    return (path, try #require(try openChain(path).top as? VHDXLayer))
  }

  /// Offset of metadata item `id`'s value in `path`.
  static func metadataItem(_ path: String, _ layer: VHDXLayer, _ id: GUID) throws -> (
    entry: UInt64, value: UInt64
  ) {
    let region = layer.regions.metadata.offset
    let table = try readFile(path, at: region, count: 64 << 10)
    let i = try #require(
      (0..<Int(table.le(10, width: 2))).first { Array(table[32 + 32 * $0..<48 + 32 * $0]) == id.bytes })
    return (region + UInt64(32 + 32 * i), region + table.le(32 + 32 * i + 16, width: 4))
  }

  @Test func headers() throws {
    let scratch = try Scratch("vhdx-h-headers")
    defer { scratch.remove() }
    let (path, _) = try Self.image(scratch)
    // One damaged header: the other is used, as qemu does.
    try patch(path, at: (64 << 10) + 200, bytes: [0x5A])
    try expectMatchesQemu(path, scratch: scratch)
    try patch(path, at: (128 << 10) + 200, bytes: [0x5A])
    expectVDiskError(.corrupt, [path, "neither VHDX header is valid", "CRC-32C"]) { _ = try openChain(path) }
    // Version 2, properly sealed: unsupported.
    try patch(path, at: (64 << 10) + 200, bytes: [0])
    try patchLE(path, at: (64 << 10) + 66, 2, width: 2)
    try reseal(path, at: 64 << 10, size: 4096)
    try patchLE(path, at: (64 << 10) + 8, 1 << 40, width: 8)  // make it current
    try reseal(path, at: 64 << 10, size: 4096)
    expectVDiskError(.unsupported, [path, "version 2"]) { _ = try openChain(path) }
  }

  @Test func truncatedAndForeignFiles() throws {
    let scratch = try Scratch("vhdx-h-trunc")
    defer { scratch.remove() }
    let (path, _) = try Self.image(scratch)
    try run("truncate", ["-s", "100000", path])
    expectVDiskError(.corrupt, [path, "truncated"]) { _ = try openChain(path) }
  }

  @Test func regionTable() throws {
    let scratch = try Scratch("vhdx-h-regions")
    defer { scratch.remove() }
    let (path, layer) = try Self.image(scratch)
    let content = try Qemu.rawContent(of: path, scratch: scratch)
    let good = try readFile(path, at: 192 << 10, count: 64 << 10)
    let batEntry = (0..<2).first { good.le(16 + 32 * $0 + 16, width: 8) == layer.regions.bat.offset } ?? 0
    func tryTable(_ edit: (inout [UInt8]) -> Void, _ kind: VDiskError.Kind, _ fragments: [String]) throws {
      var table = good
      edit(&table)
      table.seal()
      try patch(path, at: 192 << 10, bytes: table)
      try patch(path, at: 256 << 10, bytes: table)
      expectVDiskError(kind, [path] + fragments) { _ = try openChain(path) }
    }
    try tryTable(
      { $0.put(layer.regions.metadata.offset, at: 16 + 32 * batEntry + 16, width: 8) }, .corrupt, ["overlaps"]
    )
    try tryTable(
      { $0.put(1 << 40, at: 16 + 32 * batEntry + 16, width: 8) }, .corrupt, ["BAT region", "within the file"])
    try tryTable(
      { $0.put(0, at: 16 + 32 * batEntry + 16, width: 8) }, .corrupt, ["overlaps the header section"])
    try tryTable({ $0.put(5000, at: 8, width: 4) }, .corrupt, ["5000 entries"])
    try tryTable({ $0.put(1, at: 8, width: 4) }, .corrupt, ["lacks"])
    // Both copies with bad checksums.
    var bad = good
    bad[1000] ^= 1
    try patch(path, at: 192 << 10, bytes: bad)
    try patch(path, at: 256 << 10, bytes: bad)
    expectVDiskError(.corrupt, [path, "neither VHDX region table is valid"]) { _ = try openChain(path) }
    // Only the first copy bad: the second is used (qemu reads only the first).
    try patch(path, at: 256 << 10, bytes: good)
    #expect(firstDifference(try readAll(openChain(path)), content) == nil)
  }

  @Test func metadata() throws {
    let scratch = try Scratch("vhdx-h-metadata")
    defer { scratch.remove() }
    let (path, layer) = try Self.image(scratch)
    let parameters = try Self.metadataItem(path, layer, VHDXMetadata.fileParameters)
    let size = try Self.metadataItem(path, layer, VHDXMetadata.virtualDiskSize)
    let original = try readFile(path, at: layer.regions.metadata.offset, count: 2 << 20)
    func attempt(_ kind: VDiskError.Kind, _ fragments: [String], _ edit: () throws -> Void) throws {
      try patch(path, at: layer.regions.metadata.offset, bytes: original)
      try edit()
      expectVDiskError(kind, [path] + fragments) { _ = try openChain(path) }
    }
    try attempt(.corrupt, ["block size 3145728"]) {
      try patchLE(path, at: parameters.value, 3 << 20, width: 4)
    }
    try attempt(.corrupt, ["block size 0"]) { try patchLE(path, at: parameters.value, 0, width: 4) }
    try attempt(.corrupt, ["64 TiB"]) { try patchLE(path, at: size.value, 1 << 62, width: 8) }
    try attempt(.corrupt, ["multiple"]) { try patchLE(path, at: size.value, (4 << 20) + 1, width: 8) }
    try attempt(.corrupt, ["outside the metadata region"]) {
      try patchLE(path, at: size.entry + 16, 0xFFFF_FFF0, width: 4)
    }
    try attempt(.corrupt, ["2047"]) {
      try patchLE(path, at: layer.regions.metadata.offset + 10, 60000, width: 2)
    }
    try attempt(.corrupt, ["HasParent", "parent locator"]) {
      try patchLE(path, at: parameters.value + 4, 2, width: 4)
    }
    try attempt(.unsupported, ["unknown metadata item"]) {
      try patch(path, at: size.entry, bytes: GUID.random().bytes)
      try patchLE(path, at: size.entry + 24, 4, width: 4)
    }
    try attempt(.corrupt, ["lacks the required Virtual Disk Size"]) {
      try patch(path, at: size.entry, bytes: GUID.random().bytes)
      try patchLE(path, at: size.entry + 24, 0, width: 4)
    }
    // A virtual size the BAT region cannot cover.
    try attempt(.corrupt, ["BAT region"]) { try patchLE(path, at: size.value, 60 << 40, width: 8) }
  }

  @Test func batEntries() throws {
    let scratch = try Scratch("vhdx-h-bat")
    defer { scratch.remove() }
    let (path, layer) = try Self.image(scratch)
    let bat = layer.bat.region.offset
    func attempt(_ entry: UInt64, index: UInt64 = 0, _ fragments: [String]) throws {
      try patchLE(path, at: bat + index * 8, entry, width: 8)
      let chain = try openChain(path)
      expectVDiskError(.corrupt, [path] + fragments) { _ = try readAll(chain) }
    }
    try attempt((1 << 40) | 6, ["payload block 0", "outside the file"])
    try attempt(6, ["payload block 0", "outside the file"])
    try attempt(bat | 6, ["payload block 0", "overlaps the BAT"])
    try attempt(4, ["reserved BAT state 4"])
    try attempt(layer.regions.bat.offset + (8 << 20) | 7, ["PARTIALLY_PRESENT"])
  }

  /// Random damage to the metadata of a small image: any outcome but a crash or a hang.
  @Test func randomByteFlips() throws {
    let scratch = try Scratch("vhdx-h-fuzz")
    defer { scratch.remove() }
    let (path, layer) = try Self.image(scratch)
    let pristine = try readFile(path, at: 0, count: 5 << 20)
    let targets: [UInt64] = [
      64 << 10, 128 << 10, 192 << 10, layer.regions.metadata.offset, layer.bat.region.offset,
    ]
    var rng = SplitMix64(seed: 2024)
    for i in 0..<120 {
      try patch(path, at: 0, bytes: pristine)
      let base = targets[i % targets.count]
      for _ in 0..<1 + Int(rng.next() % 4) {
        let at = base + rng.next() % (i % 3 == 0 ? 4096 : 256)
        try patch(path, at: at, bytes: [UInt8(truncatingIfNeeded: rng.next())])
      }
      if i % 2 == 0, base <= 192 << 10 {
        try reseal(path, at: base, size: base < (192 << 10) ? 4096 : 64 << 10)
      }
      do {
        _ = try readAll(openChain(path))
      } catch is VDiskError {
      }
    }
  }
}
