import Cloop
import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore

/// cloop images made by `create_compressed_fs` (cloop-utils) read byte for byte as qemu reads
/// them, and hostile offsets tables refused with one clear error.
@Suite struct CloopTests {
  /// A raw input of `size` bytes: patterned runs, zeros and incompressible noise.
  static func input(_ scratch: Scratch, size: Int, seed: UInt64) throws -> String {
    var rng = SplitMix64(seed: seed)
    var bytes = [UInt8](repeating: 0, count: size)
    var position = 0
    while position < size {
      let length = min(size - position, Int(1 + rng.next() % 200_000))
      switch rng.next() % 3 {
      case 0: for i in position..<position + length { bytes[i] = UInt8(truncatingIfNeeded: i &* 13 &+ 5) }
      case 1: for i in position..<position + length { bytes[i] = UInt8(truncatingIfNeeded: rng.next()) }
      default: break
      }
      position += length
    }
    let path = scratch.file("input-\(seed).raw")
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    return path
  }

  /// `create_compressed_fs -B BLOCK INPUT OUTPUT`.
  static func compress(_ input: String, _ output: String, blockSize: Int) throws {
    try run("create_compressed_fs", ["-q", "-B", "\(blockSize)", input, output])
  }

  @Test(arguments: [65536, 16384, 512 * 3])
  func matchesQemu(blockSize: Int) throws {
    let scratch = try Scratch("cloop-read")
    defer { scratch.remove() }
    let input = try Self.input(scratch, size: 3_000_000, seed: UInt64(blockSize))
    let image = scratch.file("disk.cloop")
    try Self.compress(input, image, blockSize: blockSize)
    #expect(try FormatRegistry.standard.probe(ImageFile.open(image)).name == "cloop")
    try expectSameAsQemu(image, format: "cloop", scratch: scratch)
    // The input, padded with zeros to whole blocks.
    let chain = try openChain(image)
    var expected = [UInt8](try Data(contentsOf: URL(fileURLWithPath: input)))
    expected += [UInt8](repeating: 0, count: Int(chain.virtualSize) - expected.count)
    #expect(try readAll(chain) == expected)
    #expect(chain.top.info.clusterSize == UInt64(blockSize))
  }

  /// Small sequential reads inflate each block once (the decompressed-block cache).
  @Test func smallReadsInflateEachBlockOnce() throws {
    let scratch = try Scratch("cloop-cache")
    defer { scratch.remove() }
    let input = try Self.input(scratch, size: 1 << 20, seed: 7)
    let image = scratch.file("c.cloop")
    try Self.compress(input, image, blockSize: 65536)
    let chain = try openChain(image)
    let layer = try #require(chain.top as? CloopLayer)
    var position: UInt64 = 0
    while position < chain.virtualSize {
      _ = try chain.read(at: position, count: 4096)
      position += 4096
    }
    #expect(layer.decompressionCount == 16)
  }

  @Test func writableOpenIsRefused() throws {
    let scratch = try Scratch("cloop-rw")
    defer { scratch.remove() }
    let input = try Self.input(scratch, size: 100_000, seed: 8)
    let image = scratch.file("c.cloop")
    try Self.compress(input, image, blockSize: 65536)
    expectVDiskError(.readOnly, [image, "read-only"]) { _ = try openChain(image, .init(writable: true)) }
  }

  @Test func hostileTables() throws {
    let scratch = try Scratch("cloop-hostile")
    defer { scratch.remove() }
    let input = try Self.input(scratch, size: 5 * 65536, seed: 9)
    let image = scratch.file("h.cloop")
    try Self.compress(input, image, blockSize: 65536)
    let original = try Data(contentsOf: URL(fileURLWithPath: image))
    let size = UInt64(original.count)
    let table: UInt64 = 136
    let cases: [(UInt64, UInt64, Int, [String])] = [
      (128, 0, 4, ["block size 0"]),
      (128, 1000, 4, ["block size 1000"]),
      (128, 0x7FFF_FE00, 4, ["block size 2147483136"]),
      (132, 0xFFFF_FFFF, 4, ["offsets table of 4294967296 entries exceeds 64 MiB"]),
      (132, 1_000_000, 4, ["offsets table of 1000001 entries runs past end of file"]),
      (table + 16, 0x100, 8, ["not increasing at block 1"]),
      (table + 40, size + 1, 8, ["block 4", "beyond end of file"]),
      (table + 40, 1 << 40, 8, ["block 4", "larger than twice the block size"]),
    ]
    for (offset, value, width, fragments) in cases {
      try original.write(to: URL(fileURLWithPath: image))
      try patch(image, at: offset, value, width: width)
      expectVDiskError(.corrupt, [image] + fragments) { _ = try openChain(image) }
    }
    // A block a little over twice the block size (QEMU would allow up to 128 MiB).
    try original.write(to: URL(fileURLWithPath: image))
    try patch(image, at: table + 40, try field(image, at: table + 32, width: 8) + 2 * 65536 + 5000, width: 8)
    expectVDiskError(.corrupt, [image, "block 4 of 136072 compressed bytes", "twice the block size"]) {
      _ = try openChain(image)
    }
    // Damaged compressed data fails the read of that block alone.
    try original.write(to: URL(fileURLWithPath: image))
    let block2 = try field(image, at: table + 16, width: 8)
    try patch(image, at: block2 + 2, bytes: [UInt8](repeating: 0xFF, count: 64))
    let chain = try openChain(image)
    #expect(
      try chain.read(at: 0, count: 65536)
        == Array(try Data(contentsOf: URL(fileURLWithPath: input)).prefix(65536)))
    expectVDiskError(.corrupt, [image, "does not inflate"]) {
      _ = try chain.read(at: 2 * 65536 + 100, count: 10)
    }
    // A block that inflates to less than a block.
    try original.write(to: URL(fileURLWithPath: image))
    try patch(image, at: 128, 2 * 65536, width: 4)
    expectVDiskError(.corrupt, [image, "does not inflate to one block"]) {
      _ = try openChain(image).read(at: 0, count: 10)
    }
  }

  @Test func randomTableCorruptionNeverCrashes() throws {
    let scratch = try Scratch("cloop-hostile-fuzz")
    defer { scratch.remove() }
    let input = try Self.input(scratch, size: 8 * 16384, seed: 10)
    let image = scratch.file("f.cloop")
    try Self.compress(input, image, blockSize: 16384)
    let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: image)))
    var rng = SplitMix64(seed: 5)
    for _ in 0..<300 {
      var bytes = original
      for _ in 0..<(1 + rng.next() % 3) {
        bytes[128 + Int(rng.next() % 300)] = UInt8(truncatingIfNeeded: rng.next())
      }
      try Data(bytes).write(to: URL(fileURLWithPath: image))
      do {
        let chain = try openChain(image, .init(format: CloopDriver.self))
        if chain.virtualSize <= 64 << 20 { _ = try readAll(chain) }
      } catch is VDiskError {
      }
    }
  }
}

/// One mount through the real binary: disk.raw must equal qemu's raw conversion.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct CloopMountTests {
  @Test func mountedDiskMatchesQemu() throws {
    let scratch = try Scratch("cloop-mount")
    defer { scratch.remove() }
    let input = try CloopTests.input(scratch, size: 5_000_000, seed: 11)
    let image = scratch.file("m.cloop")
    try CloopTests.compress(input, image, blockSize: 65536)
    let raw = try Qemu.rawFile(of: image, scratch: scratch)
    try withReadOnlyMount(image, in: scratch) { mnt in
      let r = try run("cmp", [mnt + "/disk.raw", raw], check: false)
      #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
    }
  }
}
