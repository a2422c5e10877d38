import Foundation
import Logging
import Synchronization
import TestSupport
import Testing
import VDiskCore

@testable import Partitions

/// Reads the table of `view` with a fresh log capture, timing it.
func readTable(_ view: any ByteView) throws -> (partitions: [Partition], logs: CapturedLogs, seconds: Double)
{
  let logs = CapturedLogs()
  let clock = ContinuousClock()
  var partitions: [Partition] = []
  let elapsed = try clock.measure {
    partitions = try PartitionTable.read(view, logger: logs.logger(label: "partitions-test"))
  }
  let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
  return (partitions, logs, seconds)
}

// MARK: - An in-memory disk

/// A sparse in-memory disk of any size (unwritten sectors read as zeros) that counts what is read
/// from it, for hostile tables built in code and bounded-work checks.
final class MemoryDisk: ByteView {
  struct State {
    var sectors: [UInt64: [UInt8]] = [:]
    var bytesRead: UInt64 = 0
    var reads = 0
  }
  let size: UInt64
  private let state = Mutex(State())
  /// When set, every read throws it.
  let failure: VDiskError?

  init(size: UInt64, failure: VDiskError? = nil) {
    self.size = size
    self.failure = failure
  }

  var bytesRead: UInt64 { state.withLock { $0.bytesRead } }
  var reads: Int { state.withLock { $0.reads } }

  /// Stores `bytes` at `offset` (test setup; not the ByteView write).
  func put(_ bytes: [UInt8], at offset: UInt64) {
    state.withLock { state in
      var done = 0
      while done < bytes.count {
        let position = offset + UInt64(done)
        let lba = position / 512
        let within = Int(position % 512)
        let n = min(512 - within, bytes.count - done)
        var sector = state.sectors[lba] ?? [UInt8](repeating: 0, count: 512)
        sector.replaceSubrange(within..<within + n, with: bytes[done..<done + n])
        state.sectors[lba] = sector
        done += n
      }
    }
  }

  func put(sector bytes: [UInt8], lba: UInt64) { put(bytes, at: lba * 512) }

  func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
    if let failure { throw failure }
    guard offset < size, buffer.count > 0 else { return 0 }
    let n = Int(min(UInt64(buffer.count), size - offset))
    state.withLock { state in
      state.reads += 1
      state.bytesRead += UInt64(n)
      for i in 0..<n {
        let position = offset + UInt64(i)
        buffer[i] = state.sectors[position / 512]?[Int(position % 512)] ?? 0
      }
    }
    return n
  }

  func write(_ data: UnsafeRawBufferPointer, at offset: UInt64) throws -> Int {
    throw VDiskError(.readOnly, path: "memory", "read-only")
  }
  func discard(at offset: UInt64, length: UInt64, mode: DiscardMode) throws {}
  func flush() throws {}
  func resize(to newSize: UInt64, allowShrink: Bool) throws {
    throw VDiskError(.readOnly, path: "memory", "read-only")
  }
  func seekData(from offset: UInt64) throws -> UInt64? { offset < size ? offset : nil }
  func seekHole(from offset: UInt64) throws -> UInt64? { offset < size ? size : nil }
  func allocatedBytes() throws -> UInt64 { size }
}

// MARK: - Tables built in code

func le(_ value: UInt64, _ width: Int) -> [UInt8] {
  (0..<width).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) }
}

struct MBRSlot {
  var boot: UInt8 = 0
  var type: UInt8
  var start: UInt32
  var count: UInt32
}

/// A 512-byte MBR/EBR sector with up to four entries and the 0x55AA signature.
func mbrSector(_ slots: [MBRSlot?], signature: Bool = true) -> [UInt8] {
  var sector = [UInt8](repeating: 0, count: 512)
  for (i, slot) in slots.enumerated() {
    guard let slot else { continue }
    let base = 446 + 16 * i
    sector[base] = slot.boot
    sector[base + 4] = slot.type
    sector.replaceSubrange(base + 8..<base + 12, with: le(UInt64(slot.start), 4))
    sector.replaceSubrange(base + 12..<base + 16, with: le(UInt64(slot.count), 4))
  }
  if signature {
    sector[510] = 0x55
    sector[511] = 0xAA
  }
  return sector
}

struct GPTPart {
  var type: [UInt8] = linuxType
  var first: UInt64
  var last: UInt64
  var name: String = ""
}

/// 0FC63DAF-8483-4772-8E79-3D69D8477DE4 in on-disk byte order.
let linuxType: [UInt8] = [
  0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4,
]
let linuxTypeText = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"

/// The fields of a GPT header as a test sets them; `bytes(entries:)` computes both CRCs unless
/// told otherwise.
struct GPTHeaderSpec {
  var myLBA: UInt64 = 1
  var alternateLBA: UInt64
  var firstUsable: UInt64 = 34
  var lastUsable: UInt64
  var entryLBA: UInt64 = 2
  var entryCount: UInt32 = 128
  var entrySize: UInt32 = 128
  var revision: UInt32 = 0x0001_0000
  var headerSize: UInt32 = 92
  var headerCRC: UInt32?
  var entriesCRC: UInt32?

  /// A header for a disk of `sectors` sectors (primary, or backup with `backup: true`).
  init(sectors: UInt64, backup: Bool = false) {
    alternateLBA = backup ? 1 : sectors &- 1
    lastUsable = sectors &- 34
    if backup {
      myLBA = sectors &- 1
      entryLBA = sectors &- 33
    }
  }

  /// The entry array (at most 16385 entries; strides of 128 bytes when the entry size is invalid).
  func entryArray(_ parts: [GPTPart]) -> [UInt8] {
    let count = min(Int(entryCount), 16385)
    let stride = entrySize >= 128 && entrySize <= 4096 && entrySize % 128 == 0 ? Int(entrySize) : 128
    var array = [UInt8](repeating: 0, count: count * stride)
    for (i, part) in parts.enumerated() where i < count {
      let base = i * stride
      array.replaceSubrange(base..<base + 16, with: part.type)
      array.replaceSubrange(
        base + 16..<base + 32, with: [UInt8](repeating: UInt8(truncatingIfNeeded: i + 1), count: 16))
      array.replaceSubrange(base + 32..<base + 40, with: le(part.first, 8))
      array.replaceSubrange(base + 40..<base + 48, with: le(part.last, 8))
      for (j, unit) in part.name.utf16.prefix(36).enumerated() {
        array.replaceSubrange(base + 56 + 2 * j..<base + 58 + 2 * j, with: le(UInt64(unit), 2))
      }
    }
    return array
  }

  func sector(entries: [UInt8]) -> [UInt8] {
    var s = [UInt8](repeating: 0, count: 512)
    s.replaceSubrange(0..<8, with: Array("EFI PART".utf8))
    s.replaceSubrange(8..<12, with: le(UInt64(revision), 4))
    s.replaceSubrange(12..<16, with: le(UInt64(headerSize), 4))
    s.replaceSubrange(24..<32, with: le(myLBA, 8))
    s.replaceSubrange(32..<40, with: le(alternateLBA, 8))
    s.replaceSubrange(40..<48, with: le(firstUsable, 8))
    s.replaceSubrange(48..<56, with: le(lastUsable, 8))
    s.replaceSubrange(56..<72, with: [UInt8](repeating: 0x42, count: 16))
    s.replaceSubrange(72..<80, with: le(entryLBA, 8))
    s.replaceSubrange(80..<84, with: le(UInt64(entryCount), 4))
    s.replaceSubrange(84..<88, with: le(UInt64(entrySize), 4))
    s.replaceSubrange(88..<92, with: le(UInt64(entriesCRC ?? ReflectedCRC32.ieee.checksum(entries)), 4))
    let covered = Array(s[0..<min(Int(headerSize), 512)])
    s.replaceSubrange(16..<20, with: le(UInt64(headerCRC ?? ReflectedCRC32.ieee.checksum(covered)), 4))
    return s
  }
}

/// A protective MBR for a disk of `sectors` sectors.
func protectiveMBR(sectors: UInt64) -> [UInt8] {
  mbrSector([MBRSlot(type: 0xEE, start: 1, count: UInt32(min(sectors - 1, 0xFFFF_FFFF)))])
}

/// A disk with a protective MBR, the primary header `primary` at LBA 1 and (unless told not to) the
/// backup `backup` at the last LBA, wherever their own fields say they are, with their entry arrays
/// of `parts` where the fields say (written first, so that headers and MBR are not overwritten).
func gptDisk(
  sectors: UInt64, parts: [GPTPart], primary: GPTHeaderSpec? = nil, backup: GPTHeaderSpec? = nil,
  writeBackup: Bool = true
) -> MemoryDisk {
  let disk = MemoryDisk(size: sectors * 512)
  let p = primary ?? GPTHeaderSpec(sectors: sectors)
  let b = backup ?? GPTHeaderSpec(sectors: sectors, backup: true)
  let array = p.entryArray(parts)
  let backupArray = b.entryArray(parts)
  if writeBackup && b.entryLBA < sectors { disk.put(backupArray, at: b.entryLBA * 512) }
  if p.entryLBA < sectors { disk.put(array, at: p.entryLBA * 512) }
  if writeBackup { disk.put(sector: b.sector(entries: backupArray), lba: sectors - 1) }
  disk.put(sector: p.sector(entries: array), lba: 1)
  disk.put(sector: protectiveMBR(sectors: sectors), lba: 0)
  return disk
}

// MARK: - Real tools as oracles

/// `sfdisk -J` of a disk image: what util-linux's libfdisk reads.
struct SfdiskDump: Decodable {
  struct Table: Decodable {
    var label: String
    var partitions: [Entry]?
  }
  struct Entry: Decodable {
    var node: String
    var start: UInt64
    var size: UInt64
    var type: String
    var name: String?
  }
  var partitiontable: Table

  static func of(_ path: String) throws -> SfdiskDump {
    let json = try run("sfdisk", ["-J", path]).stdout
    return try JSONDecoder().decode(SfdiskDump.self, from: Data(json.utf8))
  }

  /// The partitions as `PartitionTable` should report them: extended containers left out, MBR
  /// types as `0x..`, numbers from the node names' suffixes.
  func expected(nodePrefix: String) -> [Partition] {
    let gpt = partitiontable.label == "gpt"
    return (partitiontable.partitions ?? []).compactMap { e in
      guard let number = Int(e.node.dropFirst(nodePrefix.count)) else { return nil }
      if !gpt {
        guard let type = UInt8(e.type, radix: 16), ![0x05, 0x0F, 0x85].contains(type) else { return nil }
        let hex = String(type, radix: 16)
        return Partition(
          number: number, start: e.start * 512, length: e.size * 512,
          type: "0x" + (hex.count < 2 ? "0" + hex : hex))
      }
      return Partition(
        number: number, start: e.start * 512, length: e.size * 512, type: e.type, name: e.name ?? "")
    }
  }
}

/// The bytes of `partition` read through a `SliceView` of `view`.
func sliceBytes(_ view: any ByteView, _ partition: Partition) throws -> [UInt8] {
  let slice = SliceView(parent: view, offset: partition.start, length: partition.length)
  var bytes = [UInt8](repeating: 0, count: Int(slice.size))
  var done = 0
  try bytes.withUnsafeMutableBytes { buffer in
    while done < buffer.count {
      let n = try slice.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]), at: UInt64(done))
      if n == 0 { break }
      done += n
    }
  }
  bytes.removeLast(bytes.count - done)
  return bytes
}

/// `dd if=raw skip=… count=…` of `partition` (512-byte blocks), as bytes.
func ddBytes(_ raw: String, _ partition: Partition, scratch: Scratch) throws -> [UInt8] {
  let out = scratch.file("dd-\(partition.number)-\(UUID().uuidString)")
  defer { try? FileManager.default.removeItem(atPath: out) }
  try sh(
    "dd if='\(raw)' of='\(out)' bs=512 skip=\(partition.start / 512) count=\((partition.length + 511) / 512) "
      + "status=none")
  return try [UInt8](Data(contentsOf: URL(fileURLWithPath: out)))
}

/// Requires that every partition read through a SliceView of `view` equals the dd slice of `raw`.
func expectSlicesMatchDD(
  _ view: any ByteView, _ partitions: [Partition], raw: String, scratch: Scratch,
  sourceLocation: SourceLocation = #_sourceLocation
) throws {
  for p in partitions {
    let actual = try sliceBytes(view, p)
    let expected = try ddBytes(raw, p, scratch: scratch)
    #expect(actual.count == Int(p.length), "partition \(p.number)", sourceLocation: sourceLocation)
    let difference = firstDifference(actual, expected)
    #expect(
      difference == nil, "partition \(p.number): first difference at \(difference.map { hex($0) } ?? "")",
      sourceLocation: sourceLocation)
  }
}

/// A raw file of `size` filled with pseudo-random bytes (so that slices differ), made by dd.
func randomRaw(_ path: String, megabytes: Int) throws {
  try sh("dd if=/dev/urandom of='\(path)' bs=1M count=\(megabytes) status=none")
}
