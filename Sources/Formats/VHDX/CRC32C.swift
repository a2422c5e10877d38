import VDiskCore

/// CRC-32C (Castagnoli), the checksum of VHDX headers, region tables and log entries
/// (vhdx-notes, "Checksums"): reflected polynomial 0x82F63B78, initial value 0xFFFFFFFF, final
/// XOR 0xFFFFFFFF — the iSCSI / SSE4.2 crc32c (`ReflectedCRC32.castagnoli`).
public enum CRC32C {
  /// Feeds `bytes` into a running (pre-inverted) CRC state.
  static func update(_ state: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
    ReflectedCRC32.castagnoli.update(state, bytes)
  }

  /// CRC-32C of `bytes`.
  public static func checksum(_ bytes: some Collection<UInt8>) -> UInt32 {
    let array = Array(bytes)
    return array.withUnsafeBytes { ~update(0xFFFF_FFFF, $0) }
  }

  /// CRC-32C of a VHDX structure with its 4-byte checksum field (at byte 4) read as zero
  /// (vhdx-notes, "Checksums"). Structures shorter than 8 bytes are summed as they are.
  public static func structureChecksum(_ bytes: [UInt8]) -> UInt32 {
    bytes.withUnsafeBytes { raw in
      guard raw.count >= 8 else { return ~update(0xFFFF_FFFF, raw) }
      var crc = update(0xFFFF_FFFF, UnsafeRawBufferPointer(rebasing: raw[0..<4]))
      let zeros: [UInt8] = [0, 0, 0, 0]
      crc = zeros.withUnsafeBytes { update(crc, $0) }
      crc = update(crc, UnsafeRawBufferPointer(rebasing: raw[8...]))
      return ~crc
    }
  }

  /// Whether the little-endian checksum stored at byte 4 of `bytes` matches its contents.
  public static func isValid(_ bytes: [UInt8]) -> Bool {
    guard bytes.count >= 8 else { return false }
    let stored = UInt32(bytes[4]) | UInt32(bytes[5]) << 8 | UInt32(bytes[6]) << 16 | UInt32(bytes[7]) << 24
    return stored == structureChecksum(bytes)
  }
}
