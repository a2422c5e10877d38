import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore

@testable import VHDX

/// Bounded memory for the writer's allocation check: a BAT whose entries all name one block is
/// refused once more blocks are allocated than can fit in the file, not after listing them all.
@Suite struct VHDXWriteBoundTests {
  @Test func aBATNamingOneBlockEverywhereIsRefusedByWhatFits() throws {
    let scratch = try Scratch("vhdx-write-bound")
    defer { scratch.remove() }
    var builder = VHDXBuilder(virtualSize: 64 << 30)
    builder.blocks = [0: .full(0x41)]
    let image = scratch.file("bound.vhdx")
    let hosts = try builder.write(to: image)
    let host = try #require(hosts[0])
    let ratio = builder.chunkRatio
    for block in UInt64(1)..<200 {
      try patchLE(image, at: VHDXBuilder.batOffset + (block + block / ratio) * 8, host | 6, width: 8)
    }
    let fits = try fileLength(image) / (1 << 20) + 2
    #expect(fits < 200)
    expectVDiskError(.readOnly, [image, "more than \(fits) blocks are allocated", "some overlap"]) {
      _ = try openWritable(image)
    }
    #expect(try openChain(image).read(at: 5 << 20, count: 1) == [0x41])
  }
}

private func fileLength(_ path: String) throws -> UInt64 {
  (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.uint64Value ?? 0
}
