import Foundation
import ImageFormats
import QCOW2
import TestSupport
import Testing
import VDiskCore

/// qcow2 compression_type 1 (zstd; qcow2 spec, "compression_type"): clusters written compressed
/// by qemu-io and qemu-img convert read as qemu reads them.
@Suite struct ZstdTests {
  /// The host offset of the compressed data of the cluster mapped by L2 entry 0 (qcow2 spec,
  /// "Compressed Clusters Descriptor": offset in bits 0..x-1, x = 62 - (cluster_bits - 8)).
  static func firstCompressedOffset(_ image: String) throws -> UInt64 {
    let clusterBits = try field(image, at: 20, width: 4)
    let (_, l2) = try firstL2Table(image)
    let entry = try field(image, at: l2, width: 8)
    #expect(entry & (1 << 62) != 0, "cluster 0 is not compressed")
    let x = 62 - (clusterBits - 8)
    return entry & ((1 << x) - 1)
  }

  @Test(arguments: [4096, 65536])
  func compressedWritesMatchQemu(clusterSize: Int) throws {
    let scratch = try Scratch("zstd-write")
    defer { scratch.remove() }
    let image = scratch.file("z.qcow2")
    try Qemu.create(image, size: "4M", options: ["compression_type=zstd", "cluster_size=\(clusterSize)"])
    let c = clusterSize
    try Qemu.io(
      image,
      [
        "write -c -P 0x5a 0 \(c)", "write -c -P 0x11 \(4 * c) \(4 * c)", "write -P 0x22 \(16 * c) \(c)",
        "write -c -P 0x33 \(2 << 20) \(c)",
      ])
    try expectMatchesQemu(image, scratch: scratch)
    let chain = try openChain(image)
    let layer = try #require(chain.top as? QCOW2Layer)
    #expect(layer.header.compressionType == 1)
    #expect(layer.info.formatSpecific.contains(InfoField("compression-type", .string("zstd"))))
    #expect(try chain.status(at: 0, maxLength: UInt64(c)).compressed)
    // Small reads inside one compressed cluster decompress it once.
    let before = layer.decompressionCount
    for i in 0..<16 {
      let bytes = try chain.read(at: UInt64(4 * c + i * (c / 16)), count: c / 16)
      #expect(bytes.allSatisfy { $0 == 0x11 })
    }
    #expect(layer.decompressionCount - before <= 1)
  }

  @Test func convertedImageMatchesQemu() throws {
    let scratch = try Scratch("zstd-convert")
    defer { scratch.remove() }
    let source = scratch.file("src.raw")
    try run("truncate", ["-s", "6M", source])
    try Qemu.scatterPatterns(source, format: "raw", size: 6 << 20, count: 30, seed: 21)
    // Incompressible bytes too: qemu stores those clusters uncompressed.
    try run(
      "dd",
      ["if=/dev/urandom", "of=\(source)", "bs=64k", "seek=40", "count=3", "conv=notrunc", "status=none"])
    let converted = scratch.file("zstd.qcow2")
    try Qemu.img(["convert", "-c", "-O", "qcow2", "-o", "compression_type=zstd", source, converted])
    try expectMatchesQemu(converted, scratch: scratch)
    let chain = try openChain(converted)
    var compressed = 0
    try chain.forEachStatus { if $0.compressed { compressed += 1 } }
    #expect(compressed > 0)
    let qemuData = try Qemu.map(converted).filter(\.data).map { ($0.start, $0.length) }
    var ours: [(UInt64, UInt64)] = []
    try chain.forEachStatus { if $0.isData { ours.append(($0.offset, $0.length)) } }
    #expect(mergedDataRanges(ours) == mergedDataRanges(qemuData))
  }

  @Test func zstdOverAZlibBackingFile() throws {
    let scratch = try Scratch("zstd-chain")
    defer { scratch.remove() }
    let base = scratch.file("base.qcow2")
    let top = scratch.file("top.qcow2")
    try Qemu.create(base, size: "2M")
    try Qemu.io(base, ["write -c -P 0x41 0 1M"])
    try Qemu.create(
      top, size: "2M", options: ["compression_type=zstd"], backing: "base.qcow2", backingFormat: "qcow2")
    try Qemu.io(top, ["write -c -P 0x42 512k 128k"])
    try expectMatchesQemu(top, scratch: scratch)
  }

  @Test func garbageClusterIsAnErrorOnTheRead() throws {
    let scratch = try Scratch("zstd-garbage")
    defer { scratch.remove() }
    let image = scratch.file("g.qcow2")
    try Qemu.create(image, size: "1M", options: ["compression_type=zstd"])
    try Qemu.io(image, ["write -c -P 0x5a 0 64k", "write -P 0x5b 64k 64k"])
    let offset = try Self.firstCompressedOffset(image)
    var rng = SplitMix64(seed: 1)
    try patch(image, at: offset, bytes: (0..<64).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
    let chain = try openChain(image)
    expectVDiskError(.corrupt, [image, "does not decompress as zstd", hex(offset)]) {
      _ = try chain.read(at: 0, count: 512)
    }
    #expect(try chain.read(at: 65536, count: 512).allSatisfy { $0 == 0x5b })

    // A valid frame that stops short of a whole cluster is refused too.
    try Qemu.create(image, size: "1M", options: ["compression_type=zstd"])
    try Qemu.io(image, ["write -c -P 0x5a 0 64k"])
    let frame = try run("bash", ["-c", "head -c 1000 /dev/zero | zstd -q -c | xxd -p"]).stdout
    try patch(image, at: try Self.firstCompressedOffset(image), bytes: Self.hexBytes(frame))
    let again = try openChain(image)
    expectVDiskError(.corrupt, [image, "does not decompress as zstd", "1000 of 65536"]) {
      _ = try again.read(at: 0, count: 512)
    }
  }

  static func hexBytes(_ text: String) -> [UInt8] {
    let digits = Array(text.filter(\.isHexDigit))
    return stride(from: 0, to: digits.count - 1, by: 2).compactMap {
      UInt8(String(digits[$0...$0 + 1]), radix: 16)
    }
  }

  @Test func unknownCompressionTypeIsStillRefused() throws {
    let scratch = try Scratch("zstd-unknown")
    defer { scratch.remove() }
    let image = scratch.file("u.qcow2")
    try Qemu.create(image, size: "1M", options: ["compression_type=zstd"])
    try patch(image, at: 104, bytes: [2])
    expectVDiskError(.unsupported, [image, "unknown compression_type 2"]) { _ = try openChain(image) }
    try patch(image, at: 104, bytes: [0])
    expectVDiskError(.corrupt, [image, "compression_type is 0"]) { _ = try openChain(image) }
  }
}
