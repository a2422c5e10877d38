import Foundation
import QCOW2
import TestSupport
import Testing
import VDiskCore

/// The write engine's I/O, seen from below the image file: fill and guest bytes of one host run go
/// out in one gathered write, and no metadata is written before a flush.
@Suite struct EngineWriteTests {
  @Test func oneGatheredWritePerHostRun() throws {
    let scratch = try Scratch("engine-gather")
    defer { scratch.remove() }
    let image = scratch.file("g.qcow2")
    try Qemu.create(image, size: "8M")  // 64 KiB clusters
    let disk = try FaultyChain(image, format: QCOW2Driver.self)
    let before = disk.source.stages.count
    // 5000 bytes across the boundary of two new clusters: head fill, data, tail fill, allocated
    // next to each other, so one run of 128 KiB.
    let data = [UInt8](repeating: 0x5C, count: 5000)
    _ = try data.withUnsafeBytes { try disk.chain.write($0, at: 65536 - 1000) }
    let stages = disk.source.stages.dropFirst(before)
    #expect(stages.count == 1, "\(Array(stages))")
    #expect(stages.first?.kind == .gatheringWrite && stages.first?.length == 2 * 65536, "\(Array(stages))")
    // An overwrite in place is the caller's bytes alone.
    _ = try data.withUnsafeBytes { try disk.chain.write($0, at: 65536 + 4096) }
    let more = disk.source.stages.dropFirst(before + 1)
    #expect(more.count == 1 && more.first?.length == 5000, "\(Array(more))")
    try disk.chain.flush()
    var expected = [UInt8](repeating: 0, count: 8 << 20)
    for i in 0..<5000 {
      expected[65536 - 1000 + i] = 0x5C
      expected[65536 + 4096 + i] = 0x5C
    }
    #expect(firstDifference(try Qemu.rawContent(of: image, scratch: scratch), expected) == nil)
    #expect(try Qemu.check(image, format: "qcow2").isClean)
  }
}
