import Foundation
import TestSupport
import Testing
import VDiskCore

@testable import Partitions

@Suite struct MBRTests {
  /// 16 MiB of random bytes with 3 primaries and an extended partition holding 2 logicals.
  static let script = "label: dos\n,2M,83\n,2M,82\n,1M,c\n,,5\n,2M,83\n,,8e\n"

  func makeMBRDisk(_ scratch: Scratch) throws -> String {
    let raw = scratch.file("mbr.raw")
    try randomRaw(raw, megabytes: 16)
    try sh("printf '\(Self.script.replacingOccurrences(of: "\n", with: "\\n"))' | sfdisk '\(raw)' >/dev/null")
    return raw
  }

  @Test func primariesAndLogicalsMatchSfdisk() throws {
    let scratch = try Scratch("mbr")
    defer { scratch.remove() }
    let raw = try makeMBRDisk(scratch)
    let chain = try openChain(raw)
    let (partitions, logs, _) = try readTable(chain)
    let expected = try SfdiskDump.of(raw).expected(nodePrefix: raw)
    #expect(partitions.map(\.number) == [1, 2, 3, 5, 6])
    #expect(partitions == expected)
    #expect(partitions.map(\.type) == ["0x83", "0x82", "0x0c", "0x83", "0x8e"])
    #expect(partitions.allSatisfy { $0.name == nil })
    #expect(logs.warnings.isEmpty, "\(logs.all)")
    try expectSlicesMatchDD(chain, partitions, raw: raw, scratch: scratch)
  }

  @Test func qcow2ConversionGivesTheSamePartitionsAndBytes() throws {
    let scratch = try Scratch("mbr-qcow2")
    defer { scratch.remove() }
    let raw = try makeMBRDisk(scratch)
    let qcow2 = scratch.file("mbr.qcow2")
    try Qemu.img("convert", "-f", "raw", "-O", "qcow2", raw, qcow2)
    let chain = try openChain(qcow2)
    let (partitions, _, _) = try readTable(chain)
    #expect(partitions == (try SfdiskDump.of(raw).expected(nodePrefix: raw)))
    #expect(partitions.count == 5)
    try expectSlicesMatchDD(chain, partitions, raw: raw, scratch: scratch)
  }

  @Test func truncatedDiskClipsTheLastLogical() throws {
    let scratch = try Scratch("mbr-trunc")
    defer { scratch.remove() }
    let raw = try makeMBRDisk(scratch)
    let before = try SfdiskDump.of(raw).expected(nodePrefix: raw)
    try sh("truncate -s 12M '\(raw)'")
    let (partitions, logs, _) = try readTable(try openChain(raw))
    var expected = before
    expected[4].length = (12 << 20) - expected[4].start
    #expect(partitions == expected)
    #expect(logs.warnings.count == 1)
    #expect(logs.contains("partition 6") && logs.contains("clipped"), "\(logs.all)")
    try expectSlicesMatchDD(try openChain(raw), partitions, raw: raw, scratch: scratch)
  }

  @Test func primaryReachingPastTheDiskIsClipped() throws {
    let scratch = try Scratch("mbr-clip")
    defer { scratch.remove() }
    let raw = try makeMBRDisk(scratch)
    let before = try SfdiskDump.of(raw).expected(nodePrefix: raw)
    try patch(raw, at: 446 + 12, bytes: [0xFF, 0xFF, 0xFF, 0xFF])  // partition 1: 2^32 - 1 sectors
    let (partitions, logs, _) = try readTable(try openChain(raw))
    #expect(
      partitions.first == Partition(number: 1, start: 1 << 20, length: (16 << 20) - (1 << 20), type: "0x83"))
    #expect(Array(partitions.dropFirst()) == Array(before.dropFirst()))
    #expect(logs.contains("partition 1 (LBA 2048, 4294967295 sectors) reaches past the end"), "\(logs.all)")
    #expect(logs.contains("overlapping partitions kept"), "\(logs.all)")
  }

  // MARK: Built in code

  @Test func overlappingPartitionsAreKeptAndLogged() throws {
    let disk = MemoryDisk(size: 4096 * 512)
    disk.put(
      sector: mbrSector([
        MBRSlot(type: 0x83, start: 100, count: 1000),
        MBRSlot(type: 0x83, start: 500, count: 100),
        MBRSlot(type: 0x83, start: 1100, count: 100),
        MBRSlot(type: 0x83, start: 1150, count: 10),
      ]), lba: 0)
    let (partitions, logs, _) = try readTable(disk)
    #expect(partitions.map(\.number) == [1, 2, 3, 4])
    #expect(logs.warnings.count == 1)
    #expect(logs.contains("overlapping partitions kept: 1 and 2, 3 and 4"), "\(logs.all)")
  }

  @Test func absurdStartsAreSkippedAndNumbersKept() throws {
    let disk = MemoryDisk(size: 4096 * 512)
    disk.put(
      sector: mbrSector([
        MBRSlot(type: 0x83, start: 0xFFFF_FFF0, count: 0xFFFF_FFFF),
        MBRSlot(type: 0x83, start: 4096, count: 1),
        MBRSlot(type: 0x00, start: 10, count: 10),  // type 0: unused
        MBRSlot(type: 0x07, start: 2048, count: 0xFFFF_FFFF),
      ]), lba: 0)
    let (partitions, logs, _) = try readTable(disk)
    #expect(partitions == [Partition(number: 4, start: 2048 * 512, length: 2048 * 512, type: "0x07")])
    #expect(logs.contains("partition 1 starts at LBA 4294967280, past the end"), "\(logs.all)")
    #expect(logs.contains("partition 2 starts at LBA 4096, past the end"), "\(logs.all)")
    #expect(logs.contains("partition 4") && logs.contains("clipped"), "\(logs.all)")
  }

  /// An extended partition at LBA 100 of 1000 sectors whose EBRs are at 100 + `links[i]`, each
  /// with a 10-sector logical 1 sector after it and a link to `next[i]` (relative, nil = end).
  func chainDisk(ebrs: [(at: UInt32, next: UInt32?)], extendedType: UInt8 = 0x05) -> MemoryDisk {
    let disk = MemoryDisk(size: 2048 * 512)
    disk.put(
      sector: mbrSector([
        MBRSlot(type: 0x83, start: 10, count: 80), MBRSlot(type: extendedType, start: 100, count: 1000),
      ]), lba: 0)
    for ebr in ebrs {
      disk.put(
        sector: mbrSector([
          MBRSlot(type: 0x83, start: 1, count: 10),
          ebr.next.map { MBRSlot(type: 0x05, start: $0, count: 20) },
        ]), lba: 100 + UInt64(ebr.at))
    }
    return disk
  }

  @Test(arguments: [UInt8(0x05), 0x0F, 0x85])
  func ebrChainNumbersLogicalsFromFive(type: UInt8) throws {
    let disk = chainDisk(ebrs: [(0, 50), (50, 20), (20, nil)], extendedType: type)
    let (partitions, logs, _) = try readTable(disk)
    #expect(
      partitions == [
        Partition(number: 1, start: 10 * 512, length: 80 * 512, type: "0x83"),
        Partition(number: 5, start: 101 * 512, length: 10 * 512, type: "0x83"),
        Partition(number: 6, start: 151 * 512, length: 10 * 512, type: "0x83"),
        Partition(number: 7, start: 121 * 512, length: 10 * 512, type: "0x83"),
      ])
    #expect(logs.warnings.isEmpty, "\(logs.all)")
  }

  @Test func ebrPointingToItselfStops() throws {
    let (partitions, logs, seconds) = try readTable(chainDisk(ebrs: [(0, 0)]))
    #expect(partitions.map(\.number) == [1, 5])
    #expect(logs.contains("EBR chain loops back to LBA 100"), "\(logs.all)")
    #expect(seconds < timeBudget(1))
  }

  @Test func ebrPointingToAPreviousOneStops() throws {
    let (partitions, logs, _) = try readTable(chainDisk(ebrs: [(0, 50), (50, 80), (80, 50)]))
    #expect(partitions.map(\.number) == [1, 5, 6, 7])
    #expect(logs.contains("EBR chain loops back to LBA 150"), "\(logs.all)")
  }

  @Test func ebrLinkOutsideTheExtendedPartitionStops() throws {
    let (partitions, logs, _) = try readTable(chainDisk(ebrs: [(0, 5000)]))
    #expect(partitions.map(\.number) == [1, 5])
    #expect(logs.contains("outside the extended partition"), "\(logs.all)")
  }

  @Test func longEBRChainIsCapped() throws {
    let disk = MemoryDisk(size: 8192 * 512)
    disk.put(sector: mbrSector([MBRSlot(type: 0x0F, start: 100, count: 8000)]), lba: 0)
    for i in 0..<300 {
      disk.put(
        sector: mbrSector([
          MBRSlot(type: 0x83, start: 1, count: 5), MBRSlot(type: 0x05, start: UInt32(i + 1) * 20, count: 20),
        ]), lba: 100 + UInt64(i) * 20)
    }
    let (partitions, logs, seconds) = try readTable(disk)
    #expect(partitions.count == MBR.maxLogicals)
    #expect(partitions.first?.number == 5 && partitions.last?.number == 4 + MBR.maxLogicals)
    #expect(logs.contains("longer than 256 links"), "\(logs.all)")
    #expect(disk.reads <= MBR.maxEBRs + 2)
    #expect(seconds < timeBudget(2))
  }

  @Test func garbageInAnEBRsThirdAndFourthEntriesIsIgnored() throws {
    let disk = chainDisk(ebrs: [])
    disk.put(
      sector: mbrSector([
        MBRSlot(type: 0x83, start: 1, count: 10), nil,
        MBRSlot(type: 0x83, start: 0x7000_0000, count: 10),  // outside the extended partition
        MBRSlot(type: 0x83, start: 500, count: 10),  // inside: kept, as Linux keeps it
      ]), lba: 100)
    let (partitions, _, _) = try readTable(disk)
    let starts: [UInt64] = [10, 101, 600].map { $0 * 512 }
    #expect(partitions.map(\.start) == starts)
    #expect(partitions.map(\.number) == [1, 5, 6])
  }

  @Test func secondExtendedPartitionIsIgnoredAndContainersAreNotListed() throws {
    let disk = chainDisk(ebrs: [(0, nil)])
    var sector = mbrSector([
      MBRSlot(type: 0x83, start: 10, count: 80), MBRSlot(type: 0x05, start: 100, count: 1000),
      MBRSlot(type: 0x85, start: 1200, count: 100),
    ])
    sector[446] = 0x80
    disk.put(sector: sector, lba: 0)
    let (partitions, logs, _) = try readTable(disk)
    #expect(partitions.map(\.number) == [1, 5])
    #expect(logs.contains("second extended partition (entry 3) ignored"), "\(logs.all)")
  }

  @Test func extendedPartitionPastTheDiskGivesNoLogicals() throws {
    let disk = MemoryDisk(size: 1024 * 512)
    disk.put(
      sector: mbrSector([
        MBRSlot(type: 0x83, start: 1, count: 10), MBRSlot(type: 0x05, start: 5000, count: 10),
      ]),
      lba: 0)
    let (partitions, logs, _) = try readTable(disk)
    #expect(partitions.map(\.number) == [1])
    #expect(logs.contains("EBR at LBA 5000 lies past the end of the disk"), "\(logs.all)")
  }

  @Test func bootSectorWithoutPartitionTableGivesNothing() throws {
    let disk = MemoryDisk(size: 1024 * 512)
    var sector = mbrSector([MBRSlot(type: 0x83, start: 1, count: 10)])
    sector[446] = 0x29  // not a boot indicator: FAT boot code or BPB bytes
    disk.put(sector: sector, lba: 0)
    #expect(try readTable(disk).partitions.isEmpty)
    disk.put(sector: mbrSector([MBRSlot(type: 0x83, start: 1, count: 10)], signature: false), lba: 0)
    #expect(try readTable(disk).partitions.isEmpty)
  }

  @Test(arguments: [UInt64(0), 100, 511, 512, 1000, 4096])
  func tinyDisks(size: UInt64) throws {
    let disk = MemoryDisk(size: size)
    disk.put(
      sector: mbrSector([
        MBRSlot(type: 0x83, start: 1, count: 100), MBRSlot(type: 0x05, start: 2, count: 100),
      ]),
      lba: 0)
    let (partitions, _, seconds) = try readTable(disk)
    if size < 1024 {
      #expect(partitions.isEmpty)
    } else {
      #expect(partitions == [Partition(number: 1, start: 512, length: size - 512, type: "0x83")])
    }
    #expect(seconds < timeBudget(1))
  }

  @Test func readErrorsOfTheViewAreThrown() throws {
    let failure = VDiskError(.io, path: "disk", "boom", errno: 5)
    let disk = MemoryDisk(size: 1 << 20, failure: failure)
    #expect(throws: failure) { _ = try PartitionTable.read(disk, logger: CapturedLogs().logger()) }
  }
}
