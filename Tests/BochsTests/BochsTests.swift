import Bochs
import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore

/// Bochs growing redolog images built from the layout with known content, read byte for byte as
/// built and as qemu reads them; hostile headers and catalogs refused with one clear error.
@Suite struct BochsTests {
  @Test(arguments: [(false, 4096 as UInt32), (true, 4096), (false, 65536), (false, 512)])
  func builtImagesMatchContentAndQemu(version1: Bool, extentSize: UInt32) throws {
    let scratch = try Scratch("bochs-read")
    defer { scratch.remove() }
    let builder = BochsBuilder.scattered(
      extents: 9, extentSize: extentSize, seed: UInt64(extentSize), version1: version1)
    let image = scratch.file("disk.img")
    try builder.write(to: image)
    #expect(try FormatRegistry.standard.probe(ImageFile.open(image)).name == "bochs")
    let chain = try openChain(image)
    #expect(chain.virtualSize == (UInt64(9) * UInt64(extentSize) - 300) / 512 * 512)
    #expect(try readAll(chain) == builder.content)
    #expect(try Qemu.rawContent(of: image, format: "bochs", scratch: scratch) == builder.content)
    try expectSameAsQemu(image, format: "bochs", scratch: scratch, compareMap: false)
  }

  /// Stored sectors are data, the rest unallocated. The catalog (3 entries) ends at 524; each
  /// slot is a bitmap sector and the extent.
  @Test func mapFollowsTheBitmaps() throws {
    let scratch = try Scratch("bochs-map")
    defer { scratch.remove() }
    let data = [UInt8](repeating: 7, count: 4096)
    let builder = BochsBuilder(
      diskSize: 3 * 4096, catalog: [0, 1, nil], slots: [(Set([6, 7]), data), (Set([0, 1, 2]), data)])
    let image = scratch.file("m.img")
    try builder.write(to: image)
    let layer = try openChain(image).top
    #expect(
      try layerMap(layer) == [
        MapRun(start: 0, length: 3072, kind: .unallocated),
        MapRun(start: 3072, length: 1024, kind: .data, offset: 524 + 512 + 3072),
        // The second slot's bitmap sector lies between: a new run.
        MapRun(start: 4096, length: 1536, kind: .data, offset: 524 + 512 + 4096 + 512),
        MapRun(start: 5632, length: 3 * 4096 - 5632, kind: .unallocated),
      ])
  }

  @Test func hostileHeaders() throws {
    let scratch = try Scratch("bochs-hostile")
    defer { scratch.remove() }
    let builder = BochsBuilder.scattered(extents: 4, extentSize: 4096, seed: 3)
    let image = scratch.file("h.img")
    let original = builder.bytes()
    let cases: [(Int, UInt64, Int, VDiskError.Kind, [String])] = [
      (64, 0x0003_0000, 4, .unsupported, ["version 0x30000"]),
      (72, 0xFFFF_FFFF, 4, .corrupt, ["catalog of 4294967295 entries exceeds"]),
      (72, 0x10_0000, 4, .corrupt, ["catalog of 1048576 entries", "runs past end of file"]),
      (72, 2, 4, .corrupt, ["catalog of 2 entries is too small"]),
      (68, 0x7FFF_0000, 4, .corrupt, ["runs past end of file"]),
      (80, 0, 4, .corrupt, ["extent size 0"]),
      (80, 3000, 4, .corrupt, ["extent size 3000"]),
      (80, 1 << 24, 4, .corrupt, ["extent size 16777216"]),
      (76, 0, 4, .corrupt, ["bitmap of 0 bytes"]),
      (76, 0xFFFF_FFFF, 4, .corrupt, ["bitmap of 4294967295 bytes"]),
      (88, UInt64.max, 8, .corrupt, ["too small for a disk"]),
    ]
    for (offset, value, width, kind, fragments) in cases {
      var bytes = original
      bytes.replaceSubrange(offset..<offset + width, with: littleEndian(value, width: width))
      try Data(bytes).write(to: URL(fileURLWithPath: image))
      expectVDiskError(kind, [image] + fragments) { _ = try openChain(image) }
    }
    var undoable = builder
    undoable.subtype = "Undoable"
    try undoable.write(to: image)
    expectVDiskError(.unsupported, [image, "Redolog Undoable"]) { _ = try openChain(image) }
    try builder.write(to: image)
    expectVDiskError(.readOnly, [image, "not supported"]) { _ = try openChain(image, .init(writable: true)) }
  }

  /// A catalog entry naming a slot past the end of the file, and a stored sector past it, fail
  /// the read of that extent alone.
  @Test func catalogEntriesPastEndOfFile() throws {
    let scratch = try Scratch("bochs-hostile-catalog")
    defer { scratch.remove() }
    let data = [UInt8](repeating: 9, count: 4096)
    var builder = BochsBuilder(
      diskSize: 4 * 4096, catalog: [0, 0xFFFF_FFFE, 1, nil], slots: [(Set(0..<8), data), (Set(0..<8), data)])
    let image = scratch.file("c.img")
    var bytes = builder.bytes()
    bytes.removeLast(2048)  // the last slot's last 4 sectors
    try Data(bytes).write(to: URL(fileURLWithPath: image))
    let chain = try openChain(image)
    #expect(try chain.read(at: 0, count: 4096) == data)
    expectVDiskError(.corrupt, [image, "extent 1", "beyond end of file"]) {
      _ = try chain.read(at: 4096, count: 1)
    }
    #expect(try chain.read(at: 2 * 4096, count: 2048) == Array(data[0..<2048]))
    expectVDiskError(.corrupt, [image, "extent 2 sector 4", "beyond end of file"]) {
      _ = try chain.read(at: 2 * 4096 + 2048, count: 1)
    }
    builder.catalog = [0, nil, nil, nil]
    try builder.write(to: image)
    #expect(try readAll(try openChain(image)) == builder.content)
  }

  @Test func randomCorruptionNeverCrashes() throws {
    let scratch = try Scratch("bochs-hostile-fuzz")
    defer { scratch.remove() }
    let original = BochsBuilder.scattered(extents: 6, extentSize: 4096, seed: 4).bytes()
    let image = scratch.file("f.img")
    var rng = SplitMix64(seed: 5)
    for _ in 0..<300 {
      var bytes = original
      for _ in 0..<(1 + rng.next() % 3) {
        bytes[64 + Int(rng.next() % 500)] = UInt8(truncatingIfNeeded: rng.next())
      }
      try Data(bytes).write(to: URL(fileURLWithPath: image))
      do {
        let chain = try openChain(image, .init(format: BochsDriver.self))
        _ = try chain.seekData(from: 0)
        if chain.virtualSize <= 64 << 20 { _ = try readAll(chain) }
      } catch is VDiskError {
      }
    }
  }
}

/// One mount through the real binary: disk.raw must equal the built content and qemu's reading.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct BochsMountTests {
  @Test func mountedDiskMatchesQemu() throws {
    let scratch = try Scratch("bochs-mount")
    defer { scratch.remove() }
    let builder = BochsBuilder.scattered(extents: 40, extentSize: 65536, seed: 12)
    let image = scratch.file("m.img")
    try builder.write(to: image)
    let raw = try Qemu.rawFile(of: image, format: "bochs", scratch: scratch)
    #expect([UInt8](try Data(contentsOf: URL(fileURLWithPath: raw))) == builder.content)
    try withReadOnlyMount(image, in: scratch) { mnt in
      let r = try run("cmp", [mnt + "/disk.raw", raw], check: false)
      #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
    }
  }
}
