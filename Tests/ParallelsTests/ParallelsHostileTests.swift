import Foundation
import ImageFormats
import Parallels
import TestSupport
import Testing
import VDiskCore

/// Damaged and hostile Parallels images: a clear `VDiskError` naming the file and the fault,
/// never a trap or a huge allocation.
@Suite struct ParallelsHostileTests {
  @Test func headerFieldsOutOfBounds() throws {
    let scratch = try Scratch("prl-hostile")
    defer { scratch.remove() }
    let image = scratch.file("h.hds")
    try Qemu.create(image, format: "parallels", size: "4M")
    try Qemu.io(image, format: "parallels", ["write -P 0x42 0 4M"])
    let original = try Data(contentsOf: URL(fileURLWithPath: image))
    let cases: [(UInt64, UInt64, Int, VDiskError.Kind, [String])] = [
      (16, 3, 4, .unsupported, ["version 3"]),
      (28, 0, 4, .corrupt, ["cluster size of 0 sectors"]),
      (28, 0xFFFF_FFFF, 4, .corrupt, ["cluster size of 4294967295 sectors"]),
      (32, 0xFFFF_FFFF, 4, .corrupt, ["BAT of 4294967295 entries exceeds"]),
      (32, 0x1FFF_FFFF, 4, .corrupt, ["BAT of 536870911 entries runs past end of file"]),
      (36, UInt64.max, 8, .corrupt, ["exceeds 64 PiB"]),
    ]
    for (offset, value, width, kind, fragments) in cases {
      try original.write(to: URL(fileURLWithPath: image))
      try patchLE(image, at: offset, value, width: width)
      expectVDiskError(kind, [image] + fragments) {
        _ = try openChain(image, .init(format: ParallelsDriver.self))
      }
    }
    try original.write(to: URL(fileURLWithPath: image))
    try patch(image, at: 0, bytes: Array("WithoutFreeSpacX".utf8))
    expectVDiskError(.corrupt, [image, "does not have the parallels magic"]) {
      _ = try openChain(image, .init(format: ParallelsDriver.self))
    }
    #expect(try FormatRegistry.standard.probe(ImageFile.open(image)).name == "raw")
  }

  /// A BAT entry that points past the end of the file fails the read of that cluster alone.
  @Test(arguments: [0xFFFF_FFFF as UInt64, 4, 1])
  func batEntryPastEndOfFile(entry: UInt64) throws {
    let scratch = try Scratch("prl-hostile-bat")
    defer { scratch.remove() }
    let image = scratch.file("b.hds")
    try Qemu.create(image, format: "parallels", size: "4M")
    try Qemu.io(image, format: "parallels", ["write -P 0x42 0 3M"])  // the file is 4 MiB
    try patchLE(image, at: 64 + 4 * 2, entry, width: 4)  // cluster 2 → far away, or just past the end
    let chain = try openChain(image)
    #expect(try chain.read(at: 0, count: 4096).allSatisfy { $0 == 0x42 })
    if entry == 1 {
      // A duplicate of cluster 0's place: readable (qemu reads it too), shows cluster 0's bytes.
      #expect(try chain.read(at: 2 << 20, count: 512).allSatisfy { $0 == 0x42 })
    } else {
      expectVDiskError(.corrupt, [image, "cluster 2", "beyond end of file"]) {
        _ = try chain.read(at: 2 << 20, count: 512)
      }
    }
  }

  /// The old signature's BAT counts sectors: an entry of 0xFFFFFFFF sectors is ~2 TiB in, and
  /// with the new one ×cluster sectors it must not overflow either.
  @Test func batOffsetsNeverOverflow() throws {
    let scratch = try Scratch("prl-hostile-overflow")
    defer { scratch.remove() }
    for clusters in [true, false] {
      // Clusters of 4186017 sectors (QEMU's largest), two BAT entries, no data area at all.
      var bytes = Array((clusters ? "WithouFreSpacExt" : "WithoutFreeSpace").utf8)
      bytes += littleEndian(2, width: 4) + littleEndian(16, width: 4) + littleEndian(32, width: 4)
      bytes += littleEndian(4_186_017, width: 4) + littleEndian(2, width: 4)
      bytes += littleEndian(4 * 4_186_017, width: 8) + [UInt8](repeating: 0, count: 20)
      bytes += littleEndian(0xFFFF_FFFF, width: 4) + littleEndian(0, width: 4)
      let image = scratch.file("o-\(clusters).hds")
      try Data(bytes).write(to: URL(fileURLWithPath: image))
      let chain = try openChain(image)
      expectVDiskError(.corrupt, [image, "cluster 0", "beyond end of file"]) {
        _ = try chain.read(at: 0, count: 512)
      }
      #expect(try chain.read(at: 4_186_017 * 512, count: 512).allSatisfy { $0 == 0 })
      #expect(try chain.read(at: 3 * 4_186_017 * 512, count: 512).allSatisfy { $0 == 0 })
    }
  }

  @Test func randomHeaderCorruptionNeverCrashes() throws {
    let scratch = try Scratch("prl-hostile-fuzz")
    defer { scratch.remove() }
    let image = scratch.file("f.hds")
    try Qemu.create(image, format: "parallels", size: "3M", options: ["cluster_size=64k"])
    try Qemu.io(image, format: "parallels", ["write -P 0x42 0 3M"])
    let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: image)))
    var rng = SplitMix64(seed: 5)
    for _ in 0..<300 {
      var bytes = original
      for _ in 0..<(1 + rng.next() % 3) {
        bytes[16 + Int(rng.next() % 240)] = UInt8(truncatingIfNeeded: rng.next())
      }
      try Data(bytes).write(to: URL(fileURLWithPath: image))
      do {
        let chain = try openChain(image, .init(format: ParallelsDriver.self))
        _ = try chain.seekData(from: 0)
        if chain.virtualSize <= 64 << 20 { _ = try readAll(chain) }
      } catch is VDiskError {
      }
    }
  }
}
