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
    let base = scratch.file("base.qcow2")
    try Qemu.create(base, size: "8M")
    try Qemu.io(base, ["write -P 0x33 0 1M"])
    let image = scratch.file("g.qcow2")
    try Qemu.create(image, size: "8M", backing: base, backingFormat: "qcow2")  // 64 KiB clusters
    let disk = try FaultyChain(image, format: QCOW2Driver.self, parent: base)
    let (chain, source) = (disk.chain, disk.source)
    let before = source.stages.count
    // 5000 bytes across the boundary of two new clusters: head fill, data, tail fill (copied up
    // from the base), allocated next to each other, so one run of 128 KiB.
    let data = [UInt8](repeating: 0x5C, count: 5000)
    _ = try data.withUnsafeBytes { try chain.write($0, at: 65536 - 1000) }
    let stages = source.stages.dropFirst(before)
    #expect(stages.count == 1, "\(Array(stages))")
    #expect(stages.first?.kind == .gatheringWrite && stages.first?.length == 2 * 65536, "\(Array(stages))")
    // An overwrite in place is the caller's bytes alone.
    _ = try data.withUnsafeBytes { try chain.write($0, at: 65536 + 4096) }
    let more = source.stages.dropFirst(before + 1)
    #expect(more.count == 1 && more.first?.length == 5000, "\(Array(more))")
    try chain.flush()
    var expected = [UInt8](repeating: 0, count: 8 << 20)
    for i in 0..<(1 << 20) { expected[i] = 0x33 }
    for i in 0..<5000 {
      expected[65536 - 1000 + i] = 0x5C
      expected[65536 + 4096 + i] = 0x5C
    }
    #expect(firstDifference(try Qemu.rawContent(of: image, scratch: scratch), expected) == nil)
    #expect(try Qemu.check(image, format: "qcow2").isClean)
  }

  /// Zero fill of new clusters at the end of the file is not written: the data goes out alone,
  /// then the file is extended over the rest of the last cluster (fallocate), as QEMU does.
  @Test func zeroFillPastTheEndOfTheFileIsNotWritten() throws {
    let scratch = try Scratch("engine-zero-tail")
    defer { scratch.remove() }
    let image = scratch.file("z.qcow2")
    try Qemu.create(image, size: "8M")  // 64 KiB clusters, no backing: new clusters read as zeros
    let disk = try FaultyChain(image, format: QCOW2Driver.self)
    let (chain, source) = (disk.chain, disk.source)
    let before = source.stages.count
    let data = [UInt8](repeating: 0x5C, count: 5000)
    _ = try data.withUnsafeBytes { try chain.write($0, at: 65536 - 1000) }
    let stages = Array(source.stages.dropFirst(before))
    #expect(stages.map(\.kind) == [.gatheringWrite, .extend], "\(stages)")
    #expect(stages.first?.length == 5000, "\(stages)")
    // The extension ends where the second cluster ends, 64 KiB after the first one starts + 128 KiB.
    let dataStart = try #require(stages.first?.offset)
    #expect(stages.last.map { $0.offset + $0.length } == dataStart - 64536 + 2 * 65536, "\(stages)")
    try chain.flush()
    var expected = [UInt8](repeating: 0, count: 8 << 20)
    for i in 0..<5000 { expected[65536 - 1000 + i] = 0x5C }
    #expect(try chain.read(at: 0, count: 3 * 65536) == Array(expected[0..<3 * 65536]))
    #expect(firstDifference(try Qemu.rawContent(of: image, scratch: scratch), expected) == nil)
    #expect(try Qemu.check(image, format: "qcow2").isClean)
  }
}
