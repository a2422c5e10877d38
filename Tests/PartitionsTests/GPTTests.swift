import Foundation
import TestSupport
import Testing
import VDiskCore

@testable import Partitions

@Suite struct GPTTests {
  /// 16 MiB of random bytes with a 4-partition GPT made by sgdisk (which prints even when it
  /// succeeds; `-q` would make it write nothing here).
  func makeGPTDisk(_ scratch: Scratch) throws -> String {
    let raw = scratch.file("gpt.raw")
    try randomRaw(raw, megabytes: 16)
    try sh(
      "sgdisk -o -n 1:2048:+1M -t 1:8300 -c 1:root -n 2:0:+2M -t 2:ef00 -c '2:EFI système' "
        + "-n 3:0:+1M -t 3:ef02 -n 4:0:+3M -t 4:8e00 -c '4:lvm ü 😀' '\(raw)' >/dev/null 2>&1")
    return raw
  }

  /// `sgdisk -i N`: the type GUID and the name.
  func sgdiskInfo(_ raw: String, _ number: Int) throws -> (type: String, name: String) {
    let out = try run("sgdisk", ["-i", "\(number)", raw]).stdout
    var type = ""
    var name = ""
    for line in out.split(separator: "\n") {
      if line.hasPrefix("Partition GUID code: ") {
        type = String(line.dropFirst("Partition GUID code: ".count).prefix(36))
      } else if line.hasPrefix("Partition name: '") {
        name = String(line.dropFirst("Partition name: '".count).dropLast())
      }
    }
    return (type, name)
  }

  @Test func fourPartitionsMatchSfdiskAndSgdisk() throws {
    let scratch = try Scratch("gpt")
    defer { scratch.remove() }
    let raw = try makeGPTDisk(scratch)
    let chain = try openChain(raw)
    let (partitions, logs, _) = try readTable(chain)
    #expect(partitions == (try SfdiskDump.of(raw).expected(nodePrefix: raw)))
    #expect(partitions.map(\.number) == [1, 2, 3, 4])
    #expect(partitions.map(\.name) == ["root", "EFI système", "", "lvm ü 😀"])
    #expect(partitions[0].type == linuxTypeText)
    #expect(partitions[1].type == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
    for p in partitions {
      let info = try sgdiskInfo(raw, p.number)
      #expect(p.type == info.type)
      // sgdisk prints names as UCS-2: compare those without characters outside the BMP.
      if p.name?.unicodeScalars.allSatisfy({ $0.value < 0x10000 }) == true {
        #expect(p.name == info.name)
      }
    }
    #expect(logs.warnings.isEmpty, "\(logs.all)")
    try expectSlicesMatchDD(chain, partitions, raw: raw, scratch: scratch)
  }

  @Test func qcow2ConversionGivesTheSamePartitionsAndBytes() throws {
    let scratch = try Scratch("gpt-qcow2")
    defer { scratch.remove() }
    let raw = try makeGPTDisk(scratch)
    let qcow2 = scratch.file("gpt.qcow2")
    try Qemu.img("convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096", raw, qcow2)
    let chain = try openChain(qcow2)
    let (partitions, _, _) = try readTable(chain)
    #expect(partitions == (try SfdiskDump.of(raw).expected(nodePrefix: raw)))
    try expectSlicesMatchDD(chain, partitions, raw: raw, scratch: scratch)
  }

  /// Bytes patched in the primary table, and the reason the log gives.
  static let damages: [(UInt64, String)] = [
    (512 + 40, "header CRC32"),  // first usable LBA of the primary header
    (512 + 0, "no \"EFI PART\" signature"),
    (1024 + 32, "entry array CRC32"),  // first LBA of the first primary entry
  ]

  @Test(arguments: damages)
  func damagedPrimaryFallsBackToTheBackup(offset: UInt64, reason: String) throws {
    let scratch = try Scratch("gpt-backup")
    defer { scratch.remove() }
    let raw = try makeGPTDisk(scratch)
    let expected = try SfdiskDump.of(raw).expected(nodePrefix: raw)
    try patch(raw, at: offset, bytes: [0x13, 0x37])
    let (partitions, logs, _) = try readTable(try openChain(raw))
    #expect(partitions == expected)
    #expect(logs.warnings.count == 1, "\(logs.all)")
    #expect(logs.contains("primary GPT header at LBA 1 is damaged (\(reason)"), "\(logs.all)")
    #expect(logs.contains("using the backup at LBA 32767"), "\(logs.all)")
  }

  @Test func bothHeadersDamagedGiveNoPartitions() throws {
    let scratch = try Scratch("gpt-both")
    defer { scratch.remove() }
    let raw = try makeGPTDisk(scratch)
    try patch(raw, at: 512 + 48, bytes: [0x01])
    try patch(raw, at: (16 << 20) - 512 + 48, bytes: [0x01])
    let (partitions, logs, _) = try readTable(try openChain(raw))
    #expect(partitions.isEmpty)
    #expect(logs.warnings.count == 1, "\(logs.all)")
    #expect(logs.contains("no valid GPT: primary header at LBA 1: header CRC32"), "\(logs.all)")
    #expect(logs.contains("backup header at LBA 32767: header CRC32"), "\(logs.all)")
  }

  @Test func hybridMBRIsReadAsGPT() throws {
    let scratch = try Scratch("gpt-hybrid")
    defer { scratch.remove() }
    let raw = try makeGPTDisk(scratch)
    let expected = try SfdiskDump.of(raw).expected(nodePrefix: raw)
    try sh("sgdisk -h 1:2 '\(raw)' >/dev/null 2>&1")
    let mbr = try [UInt8](Data(contentsOf: URL(fileURLWithPath: raw)).prefix(512))
    let types: Set<UInt8> = Set((0..<4).map { mbr[446 + 16 * $0 + 4] })
    #expect(types == [0xEE, 0x83, 0xEF, 0x00])
    let (partitions, logs, _) = try readTable(try openChain(raw))
    #expect(partitions == expected)
    #expect(logs.warnings.isEmpty, "\(logs.all)")
  }

  @Test func truncatedDiskClipsAndSkips() throws {
    let scratch = try Scratch("gpt-trunc")
    defer { scratch.remove() }
    let raw = try makeGPTDisk(scratch)
    let expected = try SfdiskDump.of(raw).expected(nodePrefix: raw)
    // Partitions: 1 MiB–2 MiB, 2–4, 4–5, 5–8 MiB. Cut at 6 MiB: 4 is clipped.
    try sh("truncate -s 6M '\(raw)'")
    var (partitions, logs, _) = try readTable(try openChain(raw))
    #expect(Array(partitions.prefix(3)) == Array(expected.prefix(3)))
    #expect(
      partitions.last
        == Partition(number: 4, start: 5 << 20, length: 1 << 20, type: expected[3].type, name: "lvm ü 😀"))
    #expect(logs.contains("a truncated image?"), "\(logs.all)")
    #expect(logs.contains("partition 4") && logs.contains("clipped"), "\(logs.all)")
    // Cut at 3 MiB: 2 is clipped, 3 and 4 start past the end.
    try sh("truncate -s 3M '\(raw)'")
    (partitions, logs, _) = try readTable(try openChain(raw))
    #expect(partitions.map(\.number) == [1, 2])
    #expect(partitions.last?.length == 1 << 20)
    #expect(logs.contains("partition 3 starts at LBA 8192, past the end of the disk"), "\(logs.all)")
    #expect(logs.contains("partition 4 starts at LBA 10240, past the end of the disk"), "\(logs.all)")
  }

  // MARK: Built in code

  @Test func tableBuiltInCodeIsRead() throws {
    var named = GPTPart(first: 100, last: 199, name: "éa😀")
    named.type = [UInt8](repeating: 0xAB, count: 16)
    let disk = gptDisk(
      sectors: 2048,
      parts: [
        GPTPart(first: 34, last: 99), GPTPart(type: [UInt8](repeating: 0, count: 16), first: 1, last: 2),
        named,
      ])
    let (partitions, logs, _) = try readTable(disk)
    #expect(
      partitions == [
        Partition(number: 1, start: 34 * 512, length: 66 * 512, type: linuxTypeText, name: ""),
        Partition(
          number: 3, start: 100 * 512, length: 100 * 512, type: "ABABABAB-ABAB-ABAB-ABAB-ABABABABABAB",
          name: "éa😀"),
      ])
    #expect(logs.all.isEmpty, "\(logs.all)")
    // The primary alone is enough: the backup is not read.
    #expect(disk.bytesRead <= 512 * 2 + 128 * 128)
  }

  @Test func entriesOutsideTheUsableRangeAreSkippedOrClipped() throws {
    let parts = [
      GPTPart(first: 200, last: 100),  // ends before it starts
      GPTPart(first: 10, last: 50),  // starts before the first usable LBA (over the entry array)
      GPTPart(first: 2020, last: 2040),  // starts after the last usable LBA (2014)
      GPTPart(first: 2000, last: UInt64.max),  // reaches past the usable range: clipped to 2014
      GPTPart(first: 1 << 60, last: UInt64.max),  // absurd LBAs
      GPTPart(first: 40, last: 49),
    ]
    let (partitions, logs, _) = try readTable(gptDisk(sectors: 2048, parts: parts))
    #expect(
      partitions == [
        Partition(number: 4, start: 2000 * 512, length: 15 * 512, type: linuxTypeText, name: ""),
        Partition(number: 6, start: 40 * 512, length: 10 * 512, type: linuxTypeText, name: ""),
      ])
    #expect(logs.contains("partition 1 ends (LBA 100) before it starts (LBA 200)"), "\(logs.all)")
    #expect(logs.contains("partition 2 starts at LBA 10, outside the usable LBAs 34–2014"), "\(logs.all)")
    #expect(logs.contains("partition 3 starts at LBA 2020"), "\(logs.all)")
    #expect(logs.contains("partition 4 ends at LBA 18446744073709551615, past the last usable LBA 2014"))
    #expect(logs.contains("partition 5 starts at LBA 1152921504606846976"), "\(logs.all)")
  }

  @Test func absurdLBAsOnAHugeDiskDoNotOverflow() throws {
    // A disk of 2^64 - 512 bytes (2^55 - 1 sectors) whose header claims usable LBAs up to 2^55 - 1.
    let sectors = (UInt64.max / 512)
    var primary = GPTHeaderSpec(sectors: sectors)
    primary.lastUsable = 1 << 55 - 1
    let parts = [
      GPTPart(first: 1 << 55 - 16, last: UInt64.max),  // (first + count) × 512 = 2^64
      GPTPart(first: 1 << 54 + 1, last: 1 << 54 + 8),  // past 2^63 bytes, on the disk
    ]
    let (partitions, logs, seconds) = try readTable(gptDisk(sectors: sectors, parts: parts, primary: primary))
    #expect(
      partitions == [
        Partition(number: 1, start: (1 << 55 - 16) * 512, length: 15 * 512, type: linuxTypeText, name: ""),
        Partition(number: 2, start: (1 << 54 + 1) * 512, length: 8 * 512, type: linuxTypeText, name: ""),
      ])
    #expect(
      logs.contains("partition 1 (LBA 36028797018963952, 16 sectors) reaches past the end"), "\(logs.all)")
    #expect(seconds < timeBudget(2))
  }

  /// A primary and a backup header both set by `change`: no partitions, one warning, little read.
  func expectRejected(
    _ reason: String, sectors: UInt64 = 2048, sourceLocation: SourceLocation = #_sourceLocation,
    _ change: (inout GPTHeaderSpec) -> Void
  ) throws {
    var primary = GPTHeaderSpec(sectors: sectors)
    var backup = GPTHeaderSpec(sectors: sectors, backup: true)
    change(&primary)
    change(&backup)
    let disk = gptDisk(
      sectors: sectors, parts: [GPTPart(first: 40, last: 50)], primary: primary, backup: backup)
    let (partitions, logs, seconds) = try readTable(disk)
    #expect(partitions.isEmpty, sourceLocation: sourceLocation)
    #expect(logs.warnings.count == 1, "\(logs.all)", sourceLocation: sourceLocation)
    #expect(
      logs.contains("no valid GPT: primary header at LBA 1: \(reason)"), "\(logs.all)",
      sourceLocation: sourceLocation)
    #expect(disk.bytesRead <= 4 * 512 + 2 * 16384, sourceLocation: sourceLocation)
    #expect(seconds < timeBudget(1), sourceLocation: sourceLocation)
  }

  @Test func entryCountsInTheBillionsAreRefusedWithoutReading() throws {
    try expectRejected("2147483648 entries of 128 bytes") { $0.entryCount = 1 << 31 }
    try expectRejected("4294967295 entries of 128 bytes") { $0.entryCount = UInt32.max }
    try expectRejected("16385 entries of 128 bytes") { $0.entryCount = 16385 }
    try expectRejected("8193 entries of 512 bytes: more than 16384 entries or 4 MiB") {
      $0.entryCount = 8193
      $0.entrySize = 512
    }
  }

  @Test(arguments: [UInt32(0), 1, 64, 127, 130, 192, 4224, 8192, UInt32.max])
  func badEntrySizesAreRefused(size: UInt32) throws {
    try expectRejected("entry size \(size) is not a multiple of 128") { $0.entrySize = size }
  }

  @Test(arguments: [UInt32(0), 91, 513, 1 << 20, UInt32.max])
  func badHeaderSizesAreRefused(size: UInt32) throws {
    try expectRejected("header size \(size) is not within 92–512") { $0.headerSize = size }
  }

  @Test func otherHeaderFaultsAreRefused() throws {
    try expectRejected("unknown revision 0x20000") { $0.revision = 0x0002_0000 }
    try expectRejected("header CRC32") { $0.headerCRC = 0xDEAD_BEEF }
    try expectRejected("entry array CRC32") { $0.entriesCRC = 0xDEAD_BEEF }
    try expectRejected("header says it is at LBA 7") { $0.myLBA = 7 }
    try expectRejected("first usable LBA 500 is after the last, 400") {
      $0.firstUsable = 500
      $0.lastUsable = 400
    }
    try expectRejected("first usable LBA 5000 is past the end of the disk") {
      $0.firstUsable = 5000
      $0.lastUsable = 6000
    }
    try expectRejected("usable LBAs 1–2014 include the MBR or a GPT header") { $0.firstUsable = 1 }
    try expectRejected("entry array at LBA 18446744073709551615 (32 sectors) is not on the disk") {
      $0.entryLBA = UInt64.max
    }
    try expectRejected("entry array at LBA 2040 (32 sectors) is not on the disk") { $0.entryLBA = 2040 }
    try expectRejected("entry array at LBA 0 overlaps the MBR, the header or the usable LBAs") {
      $0.entryLBA = 0
    }
    try expectRejected("entry array at LBA 100 overlaps the MBR, the header or the usable LBAs") {
      $0.entryLBA = 100
    }
  }

  @Test func largestAcceptedArrayIsRead() throws {
    // 16384 entries of 256 bytes: 4 MiB, the most accepted.
    var primary = GPTHeaderSpec(sectors: 20000)
    primary.entryCount = 16384
    primary.entrySize = 256
    primary.firstUsable = 2 + 8192
    let parts = (0..<16384).map { i in
      i == 16383
        ? GPTPart(first: 10000, last: 10009)
        : GPTPart(type: [UInt8](repeating: 0, count: 16), first: 0, last: 0)
    }
    let disk = gptDisk(sectors: 20000, parts: parts, primary: primary, writeBackup: false)
    let (partitions, logs, seconds) = try readTable(disk)
    #expect(
      partitions == [
        Partition(number: 16384, start: 10000 * 512, length: 10 * 512, type: linuxTypeText, name: "")
      ])
    #expect(logs.all.isEmpty, "\(logs.all)")
    #expect(seconds < timeBudget(5))
  }

  @Test func manyBadEntriesLogAFewLines() throws {
    let parts = (0..<128).map { _ in GPTPart(first: 5, last: 6) }
    let (partitions, logs, _) = try readTable(gptDisk(sectors: 2048, parts: parts))
    #expect(partitions.isEmpty)
    #expect(logs.warnings.count == TableLog.cap + 1)
    #expect(logs.all.last?.contains("suppressed") == true)
  }

  @Test func gptWithoutProtectiveMBRIsIgnored() throws {
    let disk = gptDisk(sectors: 2048, parts: [GPTPart(first: 40, last: 50)])
    disk.put(sector: [UInt8](repeating: 0, count: 512), lba: 0)
    let (partitions, logs, _) = try readTable(disk)
    #expect(partitions.isEmpty)
    #expect(logs.contains("no protective MBR"), "\(logs.all)")
  }

  @Test func protectiveMBRWithoutGPTGivesNothing() throws {
    let disk = MemoryDisk(size: 2048 * 512)
    disk.put(sector: protectiveMBR(sectors: 2048), lba: 0)
    let (partitions, logs, _) = try readTable(disk)
    #expect(partitions.isEmpty)
    #expect(logs.warnings.count == 1)
    #expect(logs.contains("no valid GPT"), "\(logs.all)")
  }

  @Test(arguments: [UInt64(1), 2, 3, 20, 33, 34])
  func tinyDisks(sectors: UInt64) throws {
    let disk = MemoryDisk(size: sectors * 512)
    disk.put(sector: protectiveMBR(sectors: max(sectors, 2)), lba: 0)
    var primary = GPTHeaderSpec(sectors: sectors)
    primary.entryCount = 4
    primary.firstUsable = 3
    primary.lastUsable = sectors &- 3
    let array = primary.entryArray([GPTPart(first: 3, last: 3)])
    disk.put(sector: primary.sector(entries: array), lba: 1)
    disk.put(array, at: 1024)
    let (partitions, _, seconds) = try readTable(disk)
    // Usable LBAs 3…sectors-3 exist from 6 sectors on.
    #expect(partitions.count == (sectors >= 6 ? 1 : 0))
    #expect(seconds < timeBudget(1))
  }

  @Test func crc32MatchesZlib() throws {
    #expect(ReflectedCRC32.ieee.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
    #expect(ReflectedCRC32.ieee.checksum([UInt8]()) == 0)
    var rng = SplitMix64(seed: 7)
    let bytes = (0..<100_000).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
    let split = ReflectedCRC32.ieee.checksum(
      bytes[40_000...], continuing: ReflectedCRC32.ieee.checksum(bytes[..<40_000]))
    #expect(split == ReflectedCRC32.ieee.checksum(bytes))
    let scratch = try Scratch("crc")
    defer { scratch.remove() }
    let file = scratch.file("bytes")
    try Data(bytes).write(to: URL(fileURLWithPath: file))
    let zlib = try sh(
      "python3 -c 'import sys, zlib; print(zlib.crc32(open(sys.argv[1], \"rb\").read()))' '\(file)'")
    #expect(
      UInt32(zlib.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        == ReflectedCRC32.ieee.checksum(bytes))
  }
}
