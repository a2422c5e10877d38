import Foundation
import SystemPackage
import TestSupport
import Testing
import VDiskCore

/// The byte sources under `ImageFile`: memory, file descriptor, and the tests' fault injector.
@Suite struct ByteSourceTests {
  @Test func memorySourceGrowsReadsShortAtTheEndAndIsBounded() throws {
    let memory = MemorySource([1, 2, 3], limit: 1 << 20)
    let file = try ImageFile(source: memory, path: "mem", isWritable: true)
    #expect(file.descriptor == nil)
    #expect(file.size == 3)
    #expect(file.allocation(at: 0) == nil)
    try [UInt8]([9, 9]).withUnsafeBytes { try file.write($0, at: 6) }
    #expect(memory.bytes == [1, 2, 3, 0, 0, 0, 9, 9])
    #expect(file.size == 8)
    var buffer = [UInt8](repeating: 0xff, count: 6)
    #expect(try buffer.withUnsafeMutableBytes { try file.read(into: $0, at: 4) } == 4)
    #expect(buffer == [0, 0, 9, 9, 0xff, 0xff])
    expectVDiskError(.corrupt, ["header", "beyond end of file"]) {
      _ = try file.readBytes(at: 4, count: 5, what: "header")
    }
    let a: [UInt8] = [5, 6]
    let b: [UInt8] = [7]
    try a.withUnsafeBytes { x in try b.withUnsafeBytes { y in try file.write(gathering: [x, y], at: 1) } }
    #expect(memory.bytes == [1, 5, 6, 7, 0, 0, 9, 9])
    try file.setSize(2)
    #expect(memory.bytes == [1, 5] && file.size == 2)
    #expect(file.status()?.size == 2)
    expectVDiskError(.noSpace, ["write of"]) {
      try [UInt8](repeating: 1, count: 2).withUnsafeBytes { try file.write($0, at: (1 << 20) - 1) }
    }
    try ImageLock.acquire(.writer, on: file)  // no descriptor: nothing to lock, no error

    let readOnly = try ImageFile(source: MemorySource([0]), path: "ro", isWritable: false)
    expectVDiskError(.readOnly, ["read-only"]) {
      try [UInt8]([1]).withUnsafeBytes { try readOnly.write($0, at: 0) }
    }
    #expect(readOnly.id != file.id && MemorySource().identity != memory.identity)
  }

  /// A gathering write of more buffers than one `pwritev` takes, with empty ones among them,
  /// lands byte for byte; holes and data are told apart by SEEK_DATA/SEEK_HOLE.
  @Test func fileDescriptorSourceWritesGatheredBuffersAndFindsHoles() throws {
    let scratch = try Scratch("bytesource")
    defer { scratch.remove() }
    let path = scratch.file("f")
    #expect(FileManager.default.createFile(atPath: path, contents: nil))
    let file = try ImageFile.open(path, writable: true)
    #expect(file.descriptor != nil)
    var expected = [UInt8]()
    var chunks: [[UInt8]] = []
    var rng = SplitMix64(seed: 7)
    for i in 0..<2500 {
      let chunk = (0..<Int(rng.next() % 9)).map { UInt8(truncatingIfNeeded: $0 &+ i) }
      chunks.append(chunk)
      expected += chunk
    }
    try withBuffers(chunks) { try file.write(gathering: $0, at: 1 << 20) }
    #expect(file.size == (1 << 20) + UInt64(expected.count))
    #expect(try file.readBytes(at: 1 << 20, count: expected.count) == expected)

    // [0, 1 MiB) was never written: a hole, then data to the end (ext4, xfs, tmpfs, btrfs).
    #expect(file.allocation(at: 0) == .hole(end: 1 << 20))
    #expect(file.allocation(at: 1 << 20) == .data(end: file.size))
    #expect(file.allocation(at: file.size) == .hole(end: .max))
    let status = try #require(file.status())
    #expect(status.size == file.size && status.inode == file.inode && status.device == file.device)
    try file.dataSync()
  }

  /// Stages are counted in order; a crash after stage 2 performs stages 1 and 2 and refuses
  /// (without performing) every later write, sync and size change; reads keep working; armed
  /// write faults fail without becoming stages.
  @Test func faultInjectingSourceCountsStagesAndCrashes() throws {
    let memory = MemorySource([UInt8](repeating: 0, count: 16))
    let fault = FaultInjectingSource(wrapping: memory)
    let file = try ImageFile(source: fault, path: "fault", isWritable: true)
    try [UInt8]([1]).withUnsafeBytes { try file.write($0, at: 0) }
    fault.failWrites(overlapping: 4..<5, with: .noSpace)
    expectVDiskError(.noSpace, ["write of"]) {
      try [UInt8]([2]).withUnsafeBytes { try file.write($0, at: 4) }
    }
    try file.dataSync()
    fault.crash(afterStage: 2)
    expectVDiskError(.io, ["write of"]) { try [UInt8]([3]).withUnsafeBytes { try file.write($0, at: 1) } }
    expectVDiskError(.io, ["fdatasync"]) { try file.dataSync() }
    expectVDiskError(.io, ["size"]) { try file.setSize(4) }
    #expect(fault.stages.map(\.kind) == [.write, .sync])
    #expect(fault.refusedAfterCrash == 3)
    #expect(memory.bytes == [1] + [UInt8](repeating: 0, count: 15))
    #expect(try file.readBytes(at: 0, count: 2) == [1, 0])

    let next = fault.readCount + 1
    fault.failReads(numbered: next...next)
    expectVDiskError(.io, ["read of"]) { _ = try file.readBytes(at: 0, count: 1) }
    #expect(try file.readBytes(at: 0, count: 1) == [1])
  }
}

/// Calls `body` with raw buffers over `chunks` (kept alive for the call).
private func withBuffers<R>(_ chunks: [[UInt8]], _ body: ([UnsafeRawBufferPointer]) throws -> R) rethrows -> R
{
  var pointers: [UnsafeMutableRawBufferPointer] = []
  defer { for p in pointers { p.deallocate() } }
  for chunk in chunks {
    let p = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk.count, alignment: 1)
    chunk.withUnsafeBytes { p.copyMemory(from: $0) }
    pointers.append(p)
  }
  return try body(pointers.map { UnsafeRawBufferPointer($0) })
}
