import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore
import VHD

/// Bounded memory for the writer's layout check: a BAT whose every entry names the same block
/// is refused once more blocks are allocated than can fit in the file, not after listing them all.
@Suite struct VHDWriteBoundTests {
  @Test func aBATNamingOneBlockEverywhereIsRefusedByWhatFits() throws {
    let scratch = try Scratch("vpc-write-bound")
    defer { scratch.remove() }
    let image = scratch.file("w.vhd")
    try Qemu.create(image, format: "vpc", size: "16G", options: ["force_size=on"])
    try Qemu.io(image, format: "vpc", ["write -P 0x42 0 64k"])
    let tableOffset = try field(image, at: 512 + 16, width: 8)
    let entries = Int(try field(image, at: 512 + 28, width: 4))
    #expect(entries == 8192)
    let first = try field(image, at: tableOffset, width: 4)
    var table = [UInt8]()
    for _ in 0..<entries { table += [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: first >> $0) } }
    try patch(image, at: tableOffset, bytes: table)
    let fits = (try fileSize(image) - 512) / (512 + 1)
    #expect(fits < UInt64(entries))
    expectVDiskError(.readOnly, [image, "more than \(fits) blocks are allocated", "some overlap"]) {
      _ = try openWritable(image)
    }
    // Reading needs no such check: every block reads the same 64 KiB.
    #expect(try openChain(image).read(at: 2 << 20, count: 1) == [0x42])
  }
}
