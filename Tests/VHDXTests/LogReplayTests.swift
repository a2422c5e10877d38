import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore

@testable import VHDX

/// Pending logs written by the tests into qemu-made images; the view must show the replayed
/// state (qemu's own replay of a copy is the oracle) and the file must stay unchanged.
@Suite struct LogReplayTests {
  enum Write {
    case data(UInt64, [UInt8])
    case zero(UInt64, UInt64)
  }

  /// One log entry per vhdx-notes "Log entry": header, descriptors, data sectors; sealed.
  static func entry(
    sequence: UInt64, tail: UInt64, logGuid: GUID, writes: [Write], flushed: UInt64, last: UInt64
  ) -> [UInt8] {
    let descriptorSectors = (writes.count + 2 + 127) / 128
    let dataCount = writes.filter { if case .data = $0 { true } else { false } }.count
    var e = [UInt8](repeating: 0, count: (descriptorSectors + dataCount) * 4096)
    e.replaceSubrange(0..<4, with: Array("loge".utf8))
    e.put(UInt64(e.count), at: 8, width: 4)
    e.put(tail, at: 12, width: 4)
    e.put(sequence, at: 16, width: 8)
    e.put(UInt64(writes.count), at: 24, width: 4)
    e.put(logGuid, at: 32)
    e.put(flushed, at: 48, width: 8)
    e.put(last, at: 56, width: 8)
    var dataSector = descriptorSectors * 4096
    for (i, write) in writes.enumerated() {
      let at = 64 + 32 * i
      switch write {
      case .zero(let offset, let length):
        e.replaceSubrange(at..<at + 4, with: Array("zero".utf8))
        e.put(length, at: at + 8, width: 8)
        e.put(offset, at: at + 16, width: 8)
      case .data(let offset, let sector):
        e.replaceSubrange(at..<at + 4, with: Array("desc".utf8))
        e.replaceSubrange(at + 4..<at + 8, with: sector[4092..<4096])
        e.replaceSubrange(at + 8..<at + 16, with: sector[0..<8])
        e.put(offset, at: at + 16, width: 8)
        e.replaceSubrange(dataSector..<dataSector + 4, with: Array("data".utf8))
        e.put(sequence >> 32, at: dataSector + 4, width: 4)
        e.replaceSubrange(dataSector + 8..<dataSector + 4092, with: sector[8..<4092])
        e.put(sequence & 0xFFFF_FFFF, at: dataSector + 4092, width: 4)
        dataSector += 4096
      }
      e.put(sequence, at: at + 24, width: 8)
    }
    e.seal()
    return e
  }

  /// Sets LogGuid in both headers of `image`.
  static func setLogGuid(_ image: String, _ guid: GUID) throws {
    for offset in [UInt64(64 << 10), 128 << 10] {
      try patch(image, at: offset + 48, bytes: guid.bytes)
      try reseal(image, at: offset, size: 4096)
    }
  }

  static func sha(_ path: String) throws -> String { try run("sha256sum", [path]).stdout }

  /// A qemu-made image with a pending two-entry log: entry 1 rewrites a sector of block 0 and
  /// points BAT entry 5 at a block appended to the file; entry 2 zeroes 8 KiB of block 3.
  struct Setup {
    var image: String
    var expected: [UInt8]
    var entries: [[UInt8]]
    var logOffset: UInt64
  }

  static func setup(_ scratch: Scratch) throws -> Setup {
    let image = scratch.file("log.vhdx")
    try Qemu.create(image, format: "vhdx", size: "8M", options: ["block_size=1M", "log_size=1M"])
    try Qemu.io(image, format: "vhdx", ["write -P 0x11 0 1M", "write -P 0x12 3M 1M"])
    var expected = try Qemu.rawContent(of: image, scratch: scratch)
    let layer = try #require(try openChain(image).top as? VHDXLayer)
    let block0 = try layer.bat.entry(0).fileOffset
    let block3 = try layer.bat.entry(3).fileOffset
    let batOffset = layer.bat.region.offset
    let logOffset = layer.header.logOffset
    #expect(block0 != 0 && block3 != 0)

    // Payload first (not logged): a new block at the 1 MiB-rounded end of the file.
    let size = try #require(try FileManager.default.attributesOfItem(atPath: image)[.size] as? UInt64)
    let newBlock = (size + (1 << 20) - 1) / (1 << 20) * (1 << 20)
    try patch(image, at: newBlock, bytes: [UInt8](repeating: 0x99, count: 1 << 20))
    let newSize = newBlock + (1 << 20)

    var sector = [UInt8](repeating: 0x5A, count: 4096)
    for i in 0..<8 { sector[i] = UInt8(0xA0 + i) }
    for i in 4092..<4096 { sector[i] = 0xB0 }
    var batSector = try readFile(image, at: batOffset, count: 4096)
    batSector.put(newBlock | 6, at: 5 * 8, width: 8)

    let guid = GUID.random()
    let first = entry(
      sequence: 41, tail: 0, logGuid: guid,
      writes: [.data(block0 + 8192, sector), .data(batOffset, batSector)],
      flushed: newSize, last: newSize)
    let second = entry(
      sequence: 42, tail: 0, logGuid: guid, writes: [.zero(block3 + 4096, 8192)], flushed: newSize,
      last: newSize)
    try patch(image, at: logOffset, bytes: first)
    try patch(image, at: logOffset + UInt64(first.count), bytes: second)
    try setLogGuid(image, guid)

    expected.replaceSubrange(8192..<12288, with: sector)
    expected.replaceSubrange((5 << 20)..<(6 << 20), with: repeatElement(0x99, count: 1 << 20))
    expected.replaceSubrange((3 << 20) + 4096..<(3 << 20) + 12288, with: repeatElement(0, count: 8192))
    return Setup(image: image, expected: expected, entries: [first, second], logOffset: logOffset)
  }

  /// qemu replays the log of a copy when it opens it read-write; its conversion is the oracle.
  static func qemuReplayed(_ image: String, scratch: Scratch) throws -> [UInt8] {
    let copy = scratch.file("qemu-replay-\(UUID().uuidString).vhdx")
    try run("cp", [image, copy])
    try Qemu.io(copy, format: "vhdx", ["read 0 512"])
    return try Qemu.rawContent(of: copy, scratch: scratch)
  }

  @Test func pendingLogIsReplayedInMemoryOnly() throws {
    let scratch = try Scratch("vhdx-log")
    defer { scratch.remove() }
    let s = try Self.setup(scratch)
    let before = try Self.sha(s.image)
    let chain = try openChain(s.image)
    let layer = try #require(chain.top as? VHDXLayer)
    #expect(layer.replayedLogEntries == 2)
    #expect(layer.info.formatSpecific.contains(InfoField("log-replayed", .bool(true))))
    let got = try readAll(chain)
    #expect(firstDifference(got, s.expected) == nil)
    #expect(firstDifference(got, try Self.qemuReplayed(s.image, scratch: scratch)) == nil)
    #expect(try Self.sha(s.image) == before)
    // The replayed BAT sector maps block 5; the rewritten sector reads through the overlay.
    #expect(try chain.top.extent(at: 5 << 20, maxLength: 1 << 20).mapping != .zero)
    guard case .compressed = try chain.top.extent(at: 8192, maxLength: 4096).mapping else {
      Issue.record("a replayed payload sector should be served by decode")
      return
    }
  }

  @Test func entryWithBadChecksumIsIgnored() throws {
    let scratch = try Scratch("vhdx-log-crc")
    defer { scratch.remove() }
    let s = try Self.setup(scratch)
    // Damage entry 2 (the zero descriptor) without resealing it: only entry 1 counts.
    try patch(s.image, at: s.logOffset + UInt64(s.entries[0].count) + 100, bytes: [0xFF])
    let layer = try #require(try openChain(s.image).top as? VHDXLayer)
    #expect(layer.replayedLogEntries == 1)
    var expected = s.expected
    expected.replaceSubrange((3 << 20) + 4096..<(3 << 20) + 12288, with: repeatElement(0x12, count: 8192))
    let got = try readAll(openChain(s.image))
    #expect(firstDifference(got, expected) == nil)
    #expect(firstDifference(got, try Self.qemuReplayed(s.image, scratch: scratch)) == nil)
  }

  @Test func absurdEntryLengthIsIgnored() throws {
    let scratch = try Scratch("vhdx-log-len")
    defer { scratch.remove() }
    let s = try Self.setup(scratch)
    try patchLE(s.image, at: s.logOffset + 8, 0xFFFF_F000, width: 4)
    // Entry 2's Tail names entry 1, which is no longer valid: no sequence, nothing replayed.
    let layer = try #require(try openChain(s.image).top as? VHDXLayer)
    #expect(layer.replayedLogEntries == 0)
    var pristine = s.expected
    pristine.replaceSubrange(8192..<12288, with: repeatElement(0x11, count: 4096))
    pristine.replaceSubrange((5 << 20)..<(6 << 20), with: repeatElement(0, count: 1 << 20))
    pristine.replaceSubrange((3 << 20) + 4096..<(3 << 20) + 12288, with: repeatElement(0x12, count: 8192))
    #expect(firstDifference(try readAll(openChain(s.image)), pristine) == nil)
  }

  @Test func truncatedFileAndWildTargetsAreRefused() throws {
    let scratch = try Scratch("vhdx-log-bad")
    defer { scratch.remove() }
    let s = try Self.setup(scratch)
    let guid = try #require(try openChain(s.image).top as? VHDXLayer).header.logGuid
    // FlushedFileOffset past the end of the file: the file was truncated.
    let truncated = Self.entry(
      sequence: 50, tail: 0, logGuid: guid, writes: [.zero(4 << 20, 4096)], flushed: 1 << 40, last: 1 << 40)
    try patch(s.image, at: s.logOffset, bytes: truncated + [UInt8](repeating: 0, count: 8192))
    expectVDiskError(.corrupt, [s.image, "truncated"]) { _ = try openChain(s.image) }
    // A checksum-valid entry writing over the headers.
    let wild = Self.entry(
      sequence: 50, tail: 0, logGuid: guid, writes: [.data(64 << 10, [UInt8](repeating: 1, count: 4096))],
      flushed: 1 << 20, last: 1 << 20)
    try patch(s.image, at: s.logOffset, bytes: wild)
    expectVDiskError(.corrupt, [s.image, "log entry 50"]) { _ = try openChain(s.image) }
    // An absurd zero length.
    let huge = Self.entry(
      sequence: 50, tail: 0, logGuid: guid, writes: [.zero(4 << 20, 1 << 62)], flushed: 1 << 20, last: 1 << 20
    )
    try patch(s.image, at: s.logOffset, bytes: huge)
    expectVDiskError(.corrupt, [s.image, "log entry 50"]) { _ = try openChain(s.image) }
  }
}
