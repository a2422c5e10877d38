import ImageFormats
import TestSupport
import Testing
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

/// `LayerChain.readPieces` (what the FUSE layer splices) must describe exactly the bytes
/// `read(into:at:)` returns, or decline.
@Suite struct ReadPiecesTests {
  /// The bytes the pieces stand for, gathered with plain preads.
  func gather(_ pieces: [ReadPiece]) throws -> [UInt8] {
    var bytes: [UInt8] = []
    for piece in pieces {
      switch piece {
      case .zeros(let n): bytes += [UInt8](repeating: 0, count: n)
      case .file(let file, let offset, let n): bytes += try file.readBytes(at: offset, count: n)
      }
    }
    return bytes
  }

  @Test func piecesMatchReadsOverAChainWithZerosAndBacking() throws {
    let scratch = try Scratch("pieces")
    defer { scratch.remove() }
    let base = scratch.file("base.qcow2")
    let top = scratch.file("top.qcow2")
    try Qemu.create(base, size: "6M", options: ["cluster_size=4096"])
    try Qemu.scatterPatterns(base, size: 6 << 20, count: 30, seed: 31)
    try Qemu.create(top, size: "8M", backing: "base.qcow2", backingFormat: "qcow2")
    try Qemu.scatterPatterns(top, size: 8 << 20, count: 30, seed: 32)
    try Qemu.io(top, ["write -z 64k 192k", "write -P 0x5a 7M 128k"])
    let chain = try openChain(top)
    var rng = SplitMix64(seed: 33)
    var answered = 0
    for _ in 0..<400 {
      let offset = UInt64.random(in: 0..<chain.virtualSize, using: &rng)
      let count = Int.random(in: 1...(1 << 20), using: &rng)
      guard let pieces = try chain.readPieces(at: offset, count: count, maxPieces: 64) else { continue }
      answered += 1
      #expect(pieces.count <= 64)
      let expected = try chain.read(at: offset, count: count)
      #expect(try gather(pieces) == expected, "offset \(offset) count \(count)")
    }
    #expect(answered > 100)
    #expect(try chain.readPieces(at: chain.virtualSize, count: 10, maxPieces: 4) == [])
  }

  @Test func declinesCompressedAndFragmentedRanges() throws {
    let scratch = try Scratch("pieces-c")
    defer { scratch.remove() }
    let image = scratch.file("c.qcow2")
    try Qemu.create(image, size: "4M", options: ["cluster_size=4096"])
    try Qemu.io(image, ["write -c -P 0x11 0 64k", "write -P 0x22 1M 4k", "write -P 0x23 1040k 4k"])
    let chain = try openChain(image)
    #expect(try chain.readPieces(at: 0, count: 8192, maxPieces: 64) == nil)
    // 1M..1M+64k holds data, a hole, data, …: more pieces than allowed declines.
    let pieces = try #require(try chain.readPieces(at: 1 << 20, count: 80 << 10, maxPieces: 64))
    #expect(try gather(pieces) == chain.read(at: 1 << 20, count: 80 << 10))
    #expect(try chain.readPieces(at: 1 << 20, count: 80 << 10, maxPieces: 1) == nil)
  }
}
