/// CRC-32 as GPT uses it: UEFI spec, "GPT Header": "CRC32 checksum … computed using the standard
/// CRC-32 polynomial" — the IEEE 802.3 / zlib `crc32()` one (reflected polynomial 0xEDB88320,
/// initial value and final XOR 0xFFFFFFFF). Table-driven, one byte at a time; GPT checksums at most
/// a 512-byte header and a 4 MiB entry array.
enum CRC32 {
  /// The reflected IEEE polynomial.
  static let polynomial: UInt32 = 0xEDB8_8320

  static let table: [UInt32] = (0..<256).map { (n: UInt32) -> UInt32 in
    var c = n
    for _ in 0..<8 { c = c & 1 != 0 ? polynomial ^ (c >> 1) : c >> 1 }
    return c
  }

  /// The CRC of `bytes`, continuing from `crc` (the CRC of the bytes before them; 0 to start), so
  /// `checksum(b, continuing: checksum(a)) == checksum(a + b)` — as zlib's `crc32(crc, buf, len)`.
  static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
    var c = ~crc
    table.withUnsafeBufferPointer { table in
      for byte in bytes { c = table[Int((c ^ UInt32(byte)) & 0xFF)] ^ (c >> 8) }
    }
    return ~c
  }

  static func checksum(_ bytes: ArraySlice<UInt8>, continuing crc: UInt32 = 0) -> UInt32 {
    bytes.withUnsafeBytes { checksum($0, continuing: crc) }
  }

  static func checksum(_ bytes: [UInt8], continuing crc: UInt32 = 0) -> UInt32 {
    bytes.withUnsafeBytes { checksum($0, continuing: crc) }
  }
}
