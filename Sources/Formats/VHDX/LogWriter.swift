import VDiskCore

/// Encodes log entries (vhdx-notes, "Log entry"; MS-VHDX 2.3): the writer's way of making
/// metadata changes crash-safe. Every entry it writes starts at byte 0 of the log and is the
/// whole active sequence (Tail = its own position), because the writer applies each entry in
/// place and syncs before it writes the next one over it.
enum LogWriter {
  static let sectorSize = LogEntry.sectorSize

  /// Descriptor sectors for `count` data descriptors: the 64-byte header takes two descriptor
  /// slots, 128 slots per 4 KiB sector.
  static func descriptorSectors(_ count: Int) -> Int { (count + 2 + 127) / 128 }

  /// The most data sectors one entry may carry in a log of `logLength` bytes (bounded by the
  /// reader's longest entry too).
  static func maxSectors(logLength: UInt64) -> Int {
    let sectors = Int(min(logLength, UInt64(LogEntry.maxLength)) / UInt64(sectorSize))
    var n = max(0, sectors - 1)
    while n > 0 && n + descriptorSectors(n) > sectors { n -= 1 }
    return n
  }

  /// One entry holding data descriptors for `sectors` (4 KiB-aligned file offset and its full
  /// 4 KiB of new bytes), in order.
  static func entry(
    sequence: UInt64, logGuid: GUID, sectors: [(offset: UInt64, bytes: [UInt8])], flushedFileOffset: UInt64,
    lastFileOffset: UInt64
  ) -> [UInt8] {
    let descriptorBytes = descriptorSectors(sectors.count) * sectorSize
    var entry = [UInt8](repeating: 0, count: descriptorBytes + sectors.count * sectorSize)
    func put(_ value: UInt64, _ offset: Int, _ width: Int) {
      for i in 0..<width { entry[offset + i] = UInt8(truncatingIfNeeded: value >> UInt64(8 * i)) }
    }
    put(UInt64(LogEntry.signature), 0, 4)
    put(UInt64(entry.count), 8, 4)
    put(0, 12, 4)  // Tail: this entry, at byte 0 of the log, is the whole sequence.
    put(sequence, 16, 8)
    put(UInt64(sectors.count), 24, 4)
    entry.replaceSubrange(32..<48, with: logGuid.bytes)
    put(flushedFileOffset, 48, 8)
    put(lastFileOffset, 56, 8)
    for (i, sector) in sectors.enumerated() {
      let d = 64 + 32 * i
      put(UInt64(LogEntry.dataDescriptorSignature), d, 4)
      // TrailingBytes and LeadingBytes: the parts of the sector the data sector cannot hold.
      entry.replaceSubrange(d + 4..<d + 8, with: sector.bytes[4092..<4096])
      entry.replaceSubrange(d + 8..<d + 16, with: sector.bytes[0..<8])
      put(sector.offset, d + 16, 8)
      put(sequence, d + 24, 8)
      let s = descriptorBytes + i * sectorSize
      put(UInt64(LogEntry.dataSectorSignature), s, 4)
      put(sequence >> 32, s + 4, 4)
      entry.replaceSubrange(s + 8..<s + 4092, with: sector.bytes[8..<4092])
      put(sequence & 0xFFFF_FFFF, s + 4092, 4)
    }
    put(UInt64(CRC32C.structureChecksum(entry)), 4, 4)
    return entry
  }

  /// One 4 KiB sector that ends the log (no "loge" signature at byte 0 of the log), written once
  /// an entry has been applied and synced so that no reader replays it again.
  static let emptySector = [UInt8](repeating: 0, count: sectorSize)
}
