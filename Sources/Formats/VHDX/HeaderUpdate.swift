import VDiskCore

extension GUID {
  /// A new random (version 4) GUID, for FileWriteGuid, DataWriteGuid and LogGuid.
  static func newRandom() -> GUID {
    var generator = SystemRandomNumberGenerator()
    var bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
    // Version 4 in Data3's high nibble (byte 7 on disk, little-endian), RFC 4122 variant.
    bytes[7] = bytes[7] & 0x0F | 0x40
    bytes[8] = bytes[8] & 0x3F | 0x80
    return GUID(onDisk: bytes[...])
  }
}

extension VHDXHeader {
  /// This header's 4 KiB as it goes to disk: the fields over the original raw bytes (reserved
  /// bytes kept), checksummed (vhdx-notes, "Header").
  func encoded() -> [UInt8] {
    var bytes = raw.count == Self.size ? raw : [UInt8](repeating: 0, count: Self.size)
    func put(_ value: UInt64, _ offset: Int, _ width: Int) {
      for i in 0..<width { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> UInt64(8 * i)) }
    }
    put(UInt64(Self.signature), 0, 4)
    put(sequenceNumber, 8, 8)
    bytes.replaceSubrange(16..<32, with: fileWriteGuid.bytes)
    bytes.replaceSubrange(32..<48, with: dataWriteGuid.bytes)
    bytes.replaceSubrange(48..<64, with: logGuid.bytes)
    put(UInt64(logVersion), 64, 2)
    put(UInt64(version), 66, 2)
    put(UInt64(logLength), 68, 4)
    put(logOffset, 72, 8)
    put(0, 4, 4)
    put(UInt64(CRC32C.structureChecksum(bytes)), 4, 4)
    return bytes
  }

  /// Writes `changed` (this header with new GUIDs) by the header update procedure (MS-VHDX
  /// 2.2.2.1, vhdx-notes "Header"): the non-current slot gets it with SequenceNumber + 1 and is
  /// synced, so a crash leaves either the old or the new header current; then, as qemu does, the
  /// other slot with SequenceNumber + 2, synced, so that both slots are valid. Returns the header
  /// now current.
  static func update(_ file: ImageFile, from current: VHDXHeader, to changed: VHDXHeader) throws -> VHDXHeader
  {
    var next = changed
    next.raw = current.raw
    var slot = current.slot == 1 ? 2 : 1
    for step in 1...2 {
      next.sequenceNumber = current.sequenceNumber &+ UInt64(step)
      next.slot = slot
      let bytes = next.encoded()
      try bytes.withUnsafeBytes { try file.write($0, at: offsets[slot - 1]) }
      try file.dataSync()
      next.raw = bytes
      slot = slot == 1 ? 2 : 1
    }
    return next
  }
}
