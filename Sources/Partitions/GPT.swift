import VDiskCore

/// A GPT header (UEFI spec, "GUID Partition Table (GPT) Disk Layout", table "GPT Header"), decoded
/// and validated. All fields are little-endian:
///
///     0 signature "EFI PART"     8 revision (u32)        12 header size (u32)   16 header CRC32 (u32)
///    24 my LBA (u64)            32 alternate LBA (u64)  40 first usable LBA   48 last usable LBA
///    56 disk GUID (16)          72 entry array LBA      80 entry count (u32)   84 entry size (u32)
///    88 entry array CRC32 (u32)
struct GPTHeader {
  static let signature = Array("EFI PART".utf8)
  /// "Revision 1.0 (00h 00h 01h 00h)": the major version must be 1.
  static let majorRevision: UInt32 = 1
  /// "HeaderSize … must be greater than or equal to 92 and must be less than or equal to the
  /// logical block size."
  static let minimumHeaderSize = 92
  /// "SizeOfPartitionEntry … must be set to a value of 128 × 2^n"; we accept multiples of 128 up to
  /// 4096 (only the first 128 bytes are read).
  static let entrySizeUnit = 128
  static let maximumEntrySize = 4096
  /// Bounds on the entry array (the spec's minimum is 16 KiB, 128 entries; tools make 128): at most
  /// 16384 entries and 4 MiB, so a header claiming millions costs nothing.
  static let maximumEntryCount = 16384
  static let maximumArrayBytes = 4 << 20

  var myLBA: UInt64
  var alternateLBA: UInt64
  var firstUsableLBA: UInt64
  var lastUsableLBA: UInt64
  var entryArrayLBA: UInt64
  var entryCount: Int
  var entrySize: Int
  var entryArrayCRC: UInt32

  var arrayBytes: Int { entryCount * entrySize }

  /// Decodes the header in `sector`, read from `lba` of `disk`, and checks everything that can be
  /// checked without the entry array. Throws a `TableFault` naming the first rule broken.
  init(sector: [UInt8], lba: UInt64, disk: Disk) throws {
    let reader = ByteReader(sector, path: "GPT header", baseOffset: lba &* PartitionTable.sectorSize)
    guard sector.count == Int(PartitionTable.sectorSize), sector.starts(with: Self.signature) else {
      throw TableFault("no \"EFI PART\" signature")
    }
    let revision = try reader.u32le(8)
    guard revision >> 16 == Self.majorRevision else {
      throw TableFault("unknown revision \(hex(Int(revision)))")
    }
    let headerSize = Int(try reader.u32le(12))
    guard headerSize >= Self.minimumHeaderSize, headerSize <= sector.count else {
      throw TableFault("header size \(headerSize) is not within \(Self.minimumHeaderSize)–\(sector.count)")
    }
    // "HeaderCRC32 … computed over the bytes defined by HeaderSize", with the field itself zeroed.
    let storedCRC = try reader.u32le(16)
    var zeroed = Array(sector[0..<headerSize])
    zeroed.replaceSubrange(16..<20, with: [0, 0, 0, 0])
    let computedCRC = ReflectedCRC32.ieee.checksum(zeroed)
    guard computedCRC == storedCRC else {
      throw TableFault(
        "header CRC32 \(hex(Int(storedCRC))) does not match its bytes (\(hex(Int(computedCRC))))")
    }
    myLBA = try reader.u64le(24)
    alternateLBA = try reader.u64le(32)
    firstUsableLBA = try reader.u64le(40)
    lastUsableLBA = try reader.u64le(48)
    entryArrayLBA = try reader.u64le(72)
    let count = try reader.u32le(80)
    let size = try reader.u32le(84)
    entryArrayCRC = try reader.u32le(88)
    guard myLBA == lba else {
      throw TableFault("header says it is at LBA \(myLBA), but was read from LBA \(lba)")
    }
    guard size >= Self.entrySizeUnit, size <= Self.maximumEntrySize, size % UInt32(Self.entrySizeUnit) == 0
    else {
      throw TableFault("entry size \(size) is not a multiple of 128 up to \(Self.maximumEntrySize)")
    }
    guard count <= Self.maximumEntryCount, Int(count) * Int(size) <= Self.maximumArrayBytes else {
      throw TableFault(
        "\(count) entries of \(size) bytes: more than \(Self.maximumEntryCount) entries or "
          + "\(Self.maximumArrayBytes >> 20) MiB")
    }
    entryCount = Int(count)
    entrySize = Int(size)
    guard firstUsableLBA <= lastUsableLBA else {
      throw TableFault("first usable LBA \(firstUsableLBA) is after the last, \(lastUsableLBA)")
    }
    guard firstUsableLBA < disk.sectors else {
      throw TableFault(
        "first usable LBA \(firstUsableLBA) is past the end of the disk (\(disk.sectors) sectors)")
    }
    // LBA 0 is the MBR and LBA 1 the primary header, wherever this header is.
    guard !usable(contains: 0, count: 2), !usable(contains: myLBA, count: 1) else {
      throw TableFault("usable LBAs \(firstUsableLBA)–\(lastUsableLBA) include the MBR or a GPT header")
    }
    // The array must lie on the disk, away from LBA 0, the header and the usable LBAs.
    let arraySectors = (UInt64(arrayBytes) + PartitionTable.sectorSize - 1) / PartitionTable.sectorSize
    let (arrayEnd, overflow) = entryArrayLBA.addingReportingOverflow(arraySectors)
    guard !overflow, arrayEnd <= disk.sectors else {
      throw TableFault("entry array at LBA \(entryArrayLBA) (\(arraySectors) sectors) is not on the disk")
    }
    guard
      entryArrayLBA >= 1,
      arraySectors == 0
        || ((myLBA < entryArrayLBA || myLBA >= arrayEnd)
          && !usable(contains: entryArrayLBA, count: arraySectors))
    else {
      throw TableFault("entry array at LBA \(entryArrayLBA) overlaps the MBR, the header or the usable LBAs")
    }
  }

  /// Whether LBAs [lba, lba + count) meet the usable range (count > 0, no overflow).
  func usable(contains lba: UInt64, count: UInt64) -> Bool {
    lba <= lastUsableLBA && (lba >= firstUsableLBA || firstUsableLBA - lba < count)
  }
}

/// One 128-byte GPT partition entry (UEFI spec, "GPT Partition Entry"): type GUID (16), unique
/// GUID (16), first LBA (8), last LBA (8, inclusive), attributes (8), name (72, UTF-16LE).
struct GPTEntry {
  var typeGUID: ArraySlice<UInt8>
  var firstLBA: UInt64
  var lastLBA: UInt64
  var name: String

  /// "A value of zero defines that this partition entry is not being used."
  var isUnused: Bool { typeGUID.allSatisfy { $0 == 0 } }

  /// `entry` holds at least 128 bytes (the header's entry size is checked first).
  init(_ entry: ArraySlice<UInt8>) throws {
    let bytes = Array(entry)
    let reader = ByteReader(bytes, path: "GPT entry")
    typeGUID = try reader.bytes(0, count: 16)
    firstLBA = try reader.u64le(32)
    lastLBA = try reader.u64le(40)
    name = String(utf16: try reader.bytes(56, count: 72, "partition name"), order: .littleEndian)
  }

}

/// GPT as Linux's `block/partitions/efi.c` reads it (given a protective or hybrid MBR), except
/// that a damaged primary falls back to the backup at the last LBA without the `gpt` boot option.
enum GPT {
  static func partitions(_ disk: Disk, _ log: TableLog) throws -> [Partition] {
    let primaryFault: TableFault
    do {
      let (header, array) = try table(at: 1, disk)
      return try entries(header, array, disk, log)
    } catch let fault as TableFault {
      primaryFault = fault
    }
    let last = disk.sectors &- 1
    guard disk.sectors > 2 else {
      log.warning("no valid GPT: primary header at LBA 1: \(primaryFault); no room for a backup")
      return []
    }
    do {
      let (header, array) = try table(at: last, disk)
      log.warning("primary GPT header at LBA 1 is damaged (\(primaryFault)); using the backup at LBA \(last)")
      return try entries(header, array, disk, log)
    } catch let fault as TableFault {
      log.warning(
        "no valid GPT: primary header at LBA 1: \(primaryFault); backup header at LBA \(last): \(fault)")
      return []
    }
  }

  /// The header at `lba` and its entry array, both validated (CRCs included); a `TableFault` if not.
  static func table(at lba: UInt64, _ disk: Disk) throws -> (GPTHeader, [UInt8]) {
    guard let sector = try disk.sector(lba) else { throw TableFault("LBA \(lba) is not on the disk") }
    let header = try GPTHeader(sector: sector, lba: lba, disk: disk)
    guard
      let array = try disk.bytes(
        at: header.entryArrayLBA * PartitionTable.sectorSize, count: header.arrayBytes)
    else {
      throw TableFault("entry array at LBA \(header.entryArrayLBA) is not on the disk")
    }
    let crc = ReflectedCRC32.ieee.checksum(array)
    guard crc == header.entryArrayCRC else {
      throw TableFault(
        "entry array CRC32 \(hex(Int(header.entryArrayCRC))) does not match its bytes (\(hex(Int(crc))))")
    }
    return (header, array)
  }

  /// The used entries as partitions numbered by index + 1. An entry must lie in the header's usable
  /// LBAs: one starting outside them (or ending before it starts) is skipped, one ending past them
  /// is clipped to them (so that it cannot reach the backup table); both are logged.
  static func entries(_ header: GPTHeader, _ array: [UInt8], _ disk: Disk, _ log: TableLog) throws
    -> [Partition]
  {
    if header.lastUsableLBA >= disk.sectors {
      log.warning(
        "GPT's last usable LBA \(header.lastUsableLBA) is past the end of the disk (\(disk.sectors) sectors): "
          + "a truncated image? Partitions are clipped to the disk")
    }
    var partitions: [Partition] = []
    for index in 0..<header.entryCount {
      let offset = index * header.entrySize
      let entry = try GPTEntry(array[offset..<offset + GPTHeader.entrySizeUnit])
      if entry.isUnused { continue }
      let number = index + 1
      guard entry.firstLBA <= entry.lastLBA else {
        log.warning(
          "GPT partition \(number) ends (LBA \(entry.lastLBA)) before it starts (LBA \(entry.firstLBA)): skipped"
        )
        continue
      }
      guard entry.firstLBA >= header.firstUsableLBA, entry.firstLBA <= header.lastUsableLBA else {
        log.warning(
          "GPT partition \(number) starts at LBA \(entry.firstLBA), outside the usable LBAs "
            + "\(header.firstUsableLBA)–\(header.lastUsableLBA): skipped")
        continue
      }
      var lastLBA = entry.lastLBA
      if lastLBA > header.lastUsableLBA {
        log.warning(
          "GPT partition \(number) ends at LBA \(lastLBA), past the last usable LBA \(header.lastUsableLBA): "
            + "clipped")
        lastLBA = header.lastUsableLBA
      }
      // lastLBA - firstLBA < UInt64.max since the usable range excludes LBA 0 or LBA 1.
      let (count, overflow) = (lastLBA - entry.firstLBA).addingReportingOverflow(1)
      if let p = disk.partition(
        number: number, lba: entry.firstLBA, count: overflow ? UInt64.max : count,
        type: GUID(onDisk: entry.typeGUID).description, name: entry.name, log)
      {
        partitions.append(p)
      }
    }
    return partitions
  }
}
