import Foundation
import ImageFormats
import QCOW2
import TestSupport
import Testing
import VDiskCore

/// Images patched into inconsistency: each must fail with a clear `VDiskError` (kind, file and
/// fault named) at open or on the affected read only — never crash or hang.
@Suite struct HostileImageTests {
  /// A 4 MiB, 64 KiB-cluster image with data in its first two clusters and at 2 MiB.
  func makeImage(_ scratch: Scratch, _ options: [String] = []) throws -> String {
    let image = scratch.file("h.qcow2")
    try Qemu.create(image, size: "4M", options: options)
    try Qemu.io(image, ["write -P 0x41 0 128k", "write -P 0x42 2M 64k"])
    return image
  }

  @Test func truncatedFiles() throws {
    let scratch = try Scratch("hostile-trunc")
    defer { scratch.remove() }
    let image = try makeImage(scratch)
    let (l1, _) = try firstL2Table(image)
    try sh("truncate -s 50 \(image)")
    expectVDiskError(.corrupt, [image, "too small"]) {
      _ = try openChain(image, OpenOptions(format: QCOW2Driver.self))
    }

    let second = try makeImage(scratch)
    try sh("truncate -s 65536 \(second)")  // the header cluster only
    expectVDiskError(.corrupt, [second, "L1 table", "beyond end of file"]) { _ = try openChain(second) }

    let third = try makeImage(scratch)
    try Qemu.img("resize", third, "2G")  // a bigger L1 table (needs 4 entries)
    let newL1 = try field(third, at: 40, width: 8)
    try sh("truncate -s \(newL1 + 12) \(third)")  // cut in the middle of the L1 table
    expectVDiskError(.corrupt, [third, "L1 table at \(hex(newL1))", "beyond end of file"]) {
      _ = try openChain(third)
    }
    _ = l1
  }

  @Test func l1EntryPointingBeyondEndOfFile() throws {
    let scratch = try Scratch("hostile-l1")
    defer { scratch.remove() }
    let image = try makeImage(scratch)
    let (l1, _) = try firstL2Table(image)
    try patch(image, at: l1, 0x7F00_0000, width: 8)
    let size = try FileManager.default.attributesOfItem(atPath: image)[.size] as? UInt64 ?? 0
    let chain = try openChain(image)
    expectVDiskError(.corrupt, [image, "L2 table at 0x7f000000 lies beyond end of file (size \(hex(size)))"])
    {
      _ = try chain.read(at: 0, count: 512)
    }
  }

  @Test func unalignedL2TableOffset() throws {
    let scratch = try Scratch("hostile-l2align")
    defer { scratch.remove() }
    let image = try makeImage(scratch)
    let (l1, l2) = try firstL2Table(image)
    try patch(image, at: l1, l2 + 512, width: 8)
    let chain = try openChain(image)
    expectVDiskError(.corrupt, [image, "L2 table offset \(hex(l2 + 512))", "not cluster-aligned"]) {
      _ = try chain.read(at: 0, count: 512)
    }
  }

  @Test func unalignedDataClusterFailsOnlyThatRead() throws {
    let scratch = try Scratch("hostile-dataalign")
    defer { scratch.remove() }
    let image = try makeImage(scratch)
    let (_, l2) = try firstL2Table(image)
    let entry = try field(image, at: l2, width: 8)
    try patch(image, at: l2, entry + 512, width: 8)
    let chain = try openChain(image)
    expectVDiskError(.corrupt, [image, "not cluster-aligned"]) { _ = try chain.read(at: 0, count: 512) }
    #expect(try chain.read(at: 65536, count: 1) == [0x41])
  }

  @Test func zeroFlagInAVersion2ImageIsCorrupt() throws {
    let scratch = try Scratch("hostile-v2zero")
    defer { scratch.remove() }
    let image = try makeImage(scratch, ["compat=0.10"])
    let (_, l2) = try firstL2Table(image)
    let entry = try field(image, at: l2, width: 8)
    try patch(image, at: l2, entry | 1, width: 8)
    let chain = try openChain(image)
    expectVDiskError(.corrupt, [image, "zero cluster entry in a version 2 image"]) {
      _ = try chain.read(at: 0, count: 512)
    }
  }

  @Test func hugeAndTooSmallL1Size() throws {
    let scratch = try Scratch("hostile-l1size")
    defer { scratch.remove() }
    let image = try makeImage(scratch)
    try patch(image, at: 36, 0x7FFF_FFFF, width: 4)
    expectVDiskError(.corrupt, [image, "l1_size 2147483647", "64 MiB"]) { _ = try openChain(image) }
    try patch(image, at: 36, 0, width: 4)
    expectVDiskError(.corrupt, [image, "l1_size 0 is too small"]) { _ = try openChain(image) }
    // A virtual size whose L1 table would need more than 64 MiB.
    try patch(image, at: 36, 1, width: 4)
    try patch(image, at: 24, 1 << 62, width: 8)
    expectVDiskError(.unsupported, [image, "64 MiB"]) { _ = try openChain(image) }
    try patch(image, at: 24, UInt64.max, width: 8)
    expectVDiskError(.corrupt, [image, "virtual size"]) { _ = try openChain(image) }
  }

  @Test func unknownIncompatibleBits() throws {
    let scratch = try Scratch("hostile-feature")
    defer { scratch.remove() }
    let image = try makeImage(scratch)
    try patch(image, at: 72, 1 << 9, width: 8)
    // No name for bit 9 in QEMU's table.
    expectVDiskError(.unsupported, [image, "unsupported incompatible feature bit 9"]) {
      _ = try openChain(image)
    }
    // Name it by rewriting the table's entry for incompatible bit 0 ("dirty bit").
    let head = try [UInt8](Data(contentsOf: URL(fileURLWithPath: image)).prefix(65536))
    let dirty = Array("dirty bit".utf8)
    let at = try #require((0..<60000).first { Array(head[$0..<$0 + dirty.count]) == dirty })
    #expect(head[at - 2] == 0 && head[at - 1] == 0)
    try patch(image, at: UInt64(at - 1), bytes: [9] + Array("fancy-feature".utf8) + [0, 0, 0])
    expectVDiskError(.unsupported, [image, "unsupported incompatible feature bit 9 (\"fancy-feature\")"]) {
      _ = try openChain(image)
    }
    try patch(image, at: 72, (1 << 9) | (1 << 40), width: 8)
    expectVDiskError(.unsupported, [image, "bits 9 (\"fancy-feature\"), 40"]) { _ = try openChain(image) }
  }

  @Test func encryption() throws {
    let scratch = try Scratch("hostile-crypt")
    defer { scratch.remove() }
    let image = try makeImage(scratch)
    try patch(image, at: 32, 2, width: 4)
    expectVDiskError(.unsupported, [image, "encrypted images are not supported"]) { _ = try openChain(image) }
    try patch(image, at: 32, 1, width: 4)
    expectVDiskError(.unsupported, [image, "encrypted images are not supported"]) { _ = try openChain(image) }
    // (zstd is read now; ZstdTests covers it and the refusal of unknown compression types.)
  }

  @Test func bogusHeaderLengthAndExtensionLengths() throws {
    let scratch = try Scratch("hostile-ext")
    defer { scratch.remove() }
    let image = try makeImage(scratch)
    let original = try field(image, at: 100, width: 4)
    for bad: UInt64 in [50, 105, 0x10000 + 8, 0xFFFF_FFF8] {
      try patch(image, at: 100, bad, width: 4)
      expectVDiskError(.corrupt, [image, "header_length \(bad)"]) { _ = try openChain(image) }
    }
    try patch(image, at: 100, original, width: 4)
    // The first extension's length: far past the cluster.
    try patch(image, at: original + 4, 0xFFFF_FFF0, width: 4)
    expectVDiskError(.corrupt, [image, "header extension", "runs past the end"]) { _ = try openChain(image) }
    // A used extension twice (backing format, 3 bytes padded to 8) is refused.
    let format: [UInt8] = [0xE2, 0x79, 0x2A, 0xCA, 0, 0, 0, 3] + Array("raw".utf8) + [0, 0, 0, 0, 0]
    try patch(image, at: original, bytes: format + format)
    expectVDiskError(.corrupt, [image, "header extension 0xe2792aca appears more than once"]) {
      _ = try openChain(image)
    }
    // A zero-length unknown extension repeated to the end of the cluster: the walk terminates.
    var filler: [UInt8] = []
    for _ in 0..<((65536 - Int(original)) / 8) { filler += [0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0] }
    try patch(image, at: original, bytes: filler)
    let chain = try openChain(image)
    #expect(try chain.read(at: 0, count: 1) == [0x41])
  }

  @Test func extendedL2WithSmallClusters() throws {
    let scratch = try Scratch("hostile-extl2")
    defer { scratch.remove() }
    let image = try makeImage(scratch, ["extended_l2=on", "cluster_size=16384"])
    try patch(image, at: 20, 13, width: 4)
    expectVDiskError(.corrupt, [image, "extended L2 entries need cluster_bits ≥ 14"]) {
      _ = try openChain(image)
    }
  }

  @Test func badBackingNameAndTableOffsets() throws {
    let scratch = try Scratch("hostile-misc")
    defer { scratch.remove() }
    let image = try makeImage(scratch)
    try patch(image, at: 8, 0x200, width: 8)
    try patch(image, at: 16, 5000, width: 4)
    expectVDiskError(.corrupt, [image, "backing file name length 5000"]) { _ = try openChain(image) }
    try patch(image, at: 16, 1000, width: 4)
    try patch(image, at: 8, 65000, width: 8)
    expectVDiskError(.corrupt, [image, "backing file name", "outside the first cluster"]) {
      _ = try openChain(image)
    }
    try patch(image, at: 8, 0, width: 8)
    try patch(image, at: 16, 0, width: 4)
    _ = try openChain(image)

    let l1 = try field(image, at: 40, width: 8)
    try patch(image, at: 40, l1 + 8, width: 8)
    expectVDiskError(.corrupt, [image, "L1 table offset", "not cluster-aligned"]) { _ = try openChain(image) }
    try patch(image, at: 40, l1, width: 8)
    let refcount = try field(image, at: 48, width: 8)
    try patch(image, at: 48, refcount + 1, width: 8)
    expectVDiskError(.corrupt, [image, "refcount table offset"]) { _ = try openChain(image) }
    try patch(image, at: 48, refcount, width: 8)
    try patch(image, at: 64, 12345, width: 8)
    expectVDiskError(.corrupt, [image, "snapshots offset"]) { _ = try openChain(image) }
    try patch(image, at: 64, 0, width: 8)
    try patch(image, at: 20, 30, width: 4)
    expectVDiskError(.unsupported, [image, "cluster_bits 30"]) { _ = try openChain(image) }
    try patch(image, at: 20, 16, width: 4)
    try patch(image, at: 4, 4, width: 4)
    expectVDiskError(.unsupported, [image, "version 4"]) { _ = try openChain(image) }
  }
}
