import Foundation
import QCOW2
import SystemPackage
import TestSupport
import Testing
import VDiskCore

/// Failed reads and writes under a qcow2 layer (a `FaultInjectingSource` below its file): the
/// failure reaches the caller with the right kind, fails nothing else, and loses nothing that a
/// completed flush acknowledged.
@Suite struct FaultInjectionTests {
  static let size = 8 << 20

  /// An image with qemu-written data in its first 256 KiB and at 4 MiB; returns its guest bytes.
  static func makeImage(_ image: String, scratch: Scratch) throws -> [UInt8] {
    try Qemu.create(image, size: "8M", options: ["cluster_size=4096"])
    try Qemu.io(image, ["write -P 0x31 0 256k", "write -P 0x32 4M 64k"])
    return try Qemu.rawContent(of: image, scratch: scratch)
  }

  /// One read failing with EIO (a data read, an L2 table read, the Nth read) fails only that
  /// read: the same bytes and other bytes read correctly right after, and nothing is cached
  /// from the failed attempt.
  @Test func aFailedReadFailsOnlyThatRead() throws {
    let scratch = try Scratch("fault-read")
    defer { scratch.remove() }
    let image = scratch.file("r.qcow2")
    let expected = try Self.makeImage(image, scratch: scratch)
    func expectRead(_ chain: LayerChain, _ offset: Int, _ count: Int) throws {
      let bytes = try chain.read(at: UInt64(offset), count: count)
      #expect(bytes == Array(expected[offset..<offset + count]), "read at \(hex(offset))")
    }

    // A data cluster.
    do {
      let disk = try FaultyChain(image, format: QCOW2Driver.self, writable: false)
      let host = try #require(try disk.hostOffset(of: 65536))
      disk.source.failReads(overlapping: host..<host + 1, with: .ioError)
      expectVDiskError(.io, ["read of", "failed"]) { _ = try disk.chain.read(at: 65536, count: 8192) }
      try expectRead(disk.chain, 65536, 8192)
      try expectRead(disk.chain, 0, 300_000)
    }
    // The L2 table, on the first read that needs it: the table is read again next time.
    do {
      let disk = try FaultyChain(image, format: QCOW2Driver.self, writable: false)
      let (_, l2) = try firstL2Table(image)
      disk.source.failReads(overlapping: l2..<l2 + 8, with: .ioError)
      expectVDiskError(.io, ["failed"]) { _ = try disk.chain.read(at: 4096, count: 4096) }
      try expectRead(disk.chain, 4096, 4096)
      try expectRead(disk.chain, 4 << 20, 65536)
    }
    // Reads numbered n and n + 1 (whatever they are): two failures, then everything works.
    do {
      let disk = try FaultyChain(image, format: QCOW2Driver.self, writable: false)
      let next = disk.source.readCount + 1
      disk.source.failReads(numbered: next...next + 1, with: .ioError)
      var failures = 0
      for _ in 0..<2 {
        do { _ = try disk.chain.read(at: 4 << 20, count: 65536) } catch let e as VDiskError {
          #expect(e.kind == .io && e.errno == EIO, "\(e)")
          failures += 1
        }
      }
      #expect(failures == 2)
      #expect(try readAll(disk.chain) == expected)
    }
  }

  /// A data write failing with EIO or ENOSPC: `LayerChain.write` throws the matching kind, the
  /// range keeps its old bytes, the chain keeps working, and after reopening every flushed
  /// write is there and `qemu-img check` finds no corruption.
  @Test(arguments: [(Errno.ioError, VDiskError.Kind.io), (Errno.noSpace, VDiskError.Kind.noSpace)])
  func aFailedDataWriteLosesNothingAcknowledged(error: Errno, kind: VDiskError.Kind) throws {
    let scratch = try Scratch("fault-write")
    defer { scratch.remove() }
    let image = scratch.file("w.qcow2")
    var model = DurabilityModel(try Self.makeImage(image, scratch: scratch))
    do {
      let disk = try FaultyChain(image, format: QCOW2Driver.self)
      func write(_ byte: UInt8, at offset: Int, count: Int) throws {
        let bytes = [UInt8](repeating: byte, count: count)
        model.attempt(bytes, at: offset)
        #expect(try bytes.withUnsafeBytes { try disk.chain.write($0, at: UInt64(offset)) } == count)
      }
      try write(0x41, at: 1 << 20, count: 10_000)  // allocating
      try write(0x42, at: 5000, count: 3000)  // in place
      try disk.chain.flush()
      model.flushed()

      // An allocating write: its new cluster lies at or past the end of the file.
      disk.source.failWrites(overlapping: disk.chain.top.file.size..<UInt64.max, with: error)
      expectVDiskError(kind, ["write of", "failed"]) {
        _ = try [UInt8](repeating: 0x43, count: 6000).withUnsafeBytes {
          try disk.chain.write($0, at: 6 << 20)
        }
      }
      // An overwrite in place of an allocated cluster.
      let host = try #require(try disk.hostOffset(of: 20000))
      disk.source.failWrites(overlapping: host..<host + 1, with: error)
      expectVDiskError(kind, ["write of", "failed"]) {
        _ = try [UInt8](repeating: 0x44, count: 2000).withUnsafeBytes { try disk.chain.write($0, at: 19000) }
      }
      // Nothing of either reached the guest view; other writes and the flush still work.
      #expect(model.violation(in: try readAll(disk.chain)) == nil)
      try write(0x45, at: 6 << 20, count: 6000)
      try write(0x46, at: 19000, count: 2000)
      try disk.chain.flush()
      model.flushed()
      #expect(disk.source.stages.contains { $0.kind == .sync })
    }
    try Qemu.expectCheck(image, format: "qcow2", leaksAllowed: true, "after failed \(error) writes")
    #expect(model.violation(in: try readAll(try openChain(image))) == nil)
    #expect(model.violation(in: try Qemu.rawContent(of: image, scratch: scratch)) == nil)
  }
}
