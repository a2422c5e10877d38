/// One of the four 16-byte partition entries of an MBR or EBR, at byte 446 of the sector:
/// boot indicator (1), CHS start (3), type (1), CHS end (3), start LBA (4, LE), sector count (4, LE).
/// The CHS fields are ignored, as Linux ignores them.
struct MBREntry: Equatable {
  /// The type of the single entry of a protective MBR (UEFI spec, "Protective MBR"), or one of the
  /// entries of a hybrid MBR.
  static let gptProtective: UInt8 = 0xEE
  /// Extended partition types: DOS (0x05), Windows LBA (0x0F), Linux (0x85).
  static let extendedTypes: Set<UInt8> = [0x05, 0x0F, 0x85]

  var bootIndicator: UInt8
  var type: UInt8
  var startLBA: UInt32
  var sectorCount: UInt32

  /// Type 0 or no sectors: an empty slot.
  var isUnused: Bool { type == 0 || sectorCount == 0 }
  var isExtended: Bool { Self.extendedTypes.contains(type) }

  /// `0x83`: two lowercase hex digits.
  var typeString: String {
    let digits = String(type, radix: 16)
    return "0x" + (digits.count < 2 ? "0" + digits : digits)
  }
}

/// A sector holding an MBR-style table: the MBR at LBA 0 or an EBR.
struct MBRSector {
  static let tableOffset = 446
  static let entrySize = 16
  static let signatureOffset = 510

  var entries: [MBREntry]

  /// Nil when the sector lacks the 0x55 0xAA signature at byte 510 (or is short).
  init?(_ sector: [UInt8]) {
    guard sector.count >= 512, sector[Self.signatureOffset] == 0x55, sector[Self.signatureOffset + 1] == 0xAA
    else { return nil }
    func le32(_ offset: Int) -> UInt32 {
      (0..<4).reduce(UInt32(0)) { $0 | UInt32(sector[offset + $1]) << (8 * UInt32($1)) }
    }
    entries = (0..<4).map { slot in
      let base = Self.tableOffset + slot * Self.entrySize
      return MBREntry(
        bootIndicator: sector[base], type: sector[base + 4], startLBA: le32(base + 8),
        sectorCount: le32(base + 12))
    }
  }
}

/// The DOS partition table, read like Linux's `block/partitions/msdos.c`: primaries 1–4 by slot,
/// then the logicals of the (first) extended partition numbered from 5 in EBR chain order.
enum MBR {
  /// Hard cap on logical partitions (Linux's DISK_MAX_PARTS is 256 for the whole disk).
  static let maxLogicals = 256
  /// Hard cap on EBRs read, whatever they hold: bounds the work of a chain with no loop but no end.
  static let maxEBRs = 256

  static func partitions(_ mbr: MBRSector, _ disk: Disk, _ log: TableLog) throws -> [Partition] {
    // msdos.c: with the signature present this is "either the boot sector of a FAT filesystem or
    // a DOS-type partition table. Reject this in case the boot indicator is not 0 or 0x80."
    if let slot = mbr.entries.firstIndex(where: { $0.bootIndicator != 0 && $0.bootIndicator != 0x80 }) {
      log.debug(
        "LBA 0 has an MBR signature but entry \(slot + 1)'s boot indicator is neither 0 nor 0x80: "
          + "a boot sector, not a partition table")
      return []
    }
    var partitions: [Partition] = []
    var extended: MBREntry?
    for (slot, entry) in mbr.entries.enumerated() where !entry.isUnused {
      if entry.isExtended {
        if extended == nil {
          extended = entry
        } else {
          log.warning("second extended partition (entry \(slot + 1)) ignored: only one EBR chain is read")
        }
        continue
      }
      if let p = disk.partition(
        number: slot + 1, lba: UInt64(entry.startLBA), count: UInt64(entry.sectorCount),
        type: entry.typeString, log)
      {
        partitions.append(p)
      }
    }
    if let extended {
      partitions += try logicals(of: extended, disk, log)
    }
    return partitions
  }

  /// Walks the EBR chain. An EBR's data entry starts relative to the EBR itself; its link entry
  /// (the first extended-type entry) points to the next EBR relative to the start of the extended
  /// partition. The walk stops at an EBR without signature, one outside the extended partition or
  /// the disk, one already visited (a loop), or after `maxEBRs`.
  static func logicals(of extended: MBREntry, _ disk: Disk, _ log: TableLog) throws -> [Partition] {
    let extendedStart = UInt64(extended.startLBA)
    let extendedEnd = extendedStart + UInt64(extended.sectorCount)
    var partitions: [Partition] = []
    var visited: Set<UInt64> = []
    var number = 5
    var ebrLBA = extendedStart
    var ebrsRead = 0
    while true {
      guard ebrsRead < maxEBRs else {
        log.warning("EBR chain longer than \(maxEBRs) links: the rest is ignored")
        break
      }
      guard visited.insert(ebrLBA).inserted else {
        log.warning("EBR chain loops back to LBA \(ebrLBA): the chain ends there")
        break
      }
      guard let sector = try disk.sector(ebrLBA) else {
        log.warning("EBR at LBA \(ebrLBA) lies past the end of the disk (\(disk.sectors) sectors)")
        break
      }
      ebrsRead += 1
      guard let ebr = MBRSector(sector) else {
        // The end of the chain for Linux too; an empty extended partition looks like this.
        log.debug("no EBR signature at LBA \(ebrLBA): the chain ends")
        break
      }
      for (index, entry) in ebr.entries.enumerated() where !entry.isUnused && !entry.isExtended {
        let start = ebrLBA + UInt64(entry.startLBA)
        let count = UInt64(entry.sectorCount)
        // msdos.c: the 3rd and 4th entries "sometimes contain random garbage": used only when
        // wholly inside the extended partition.
        if index >= 2 && (start < extendedStart || start + count > extendedEnd) { continue }
        guard partitions.count < maxLogicals else {
          log.warning("more than \(maxLogicals) logical partitions: the rest are ignored")
          return partitions
        }
        if let p = disk.partition(number: number, lba: start, count: count, type: entry.typeString, log) {
          partitions.append(p)
        }
        number += 1
      }
      guard let link = ebr.entries.first(where: { !$0.isUnused && $0.isExtended }) else { break }
      let next = extendedStart + UInt64(link.startLBA)
      guard next < extendedEnd else {
        log.warning(
          "EBR at LBA \(ebrLBA) links to LBA \(next), outside the extended partition "
            + "(LBA \(extendedStart)–\(extendedEnd - 1)): the chain ends")
        break
      }
      ebrLBA = next
    }
    return partitions
  }
}
