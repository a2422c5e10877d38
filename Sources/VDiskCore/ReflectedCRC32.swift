/// A reflected CRC-32 with initial value and final XOR 0xFFFFFFFF, table-driven, one byte at a
/// time. The two that images use differ only in the polynomial: IEEE 802.3 (zlib's `crc32()`,
/// GPT: UEFI spec, "GPT Header") and Castagnoli (iSCSI / SSE4.2 `crc32c`, VHDX: vhdx-notes,
/// "Checksums").
public struct ReflectedCRC32: Sendable {
  /// The reflected polynomial.
  public let polynomial: UInt32
  private let table: [UInt32]

  public init(polynomial: UInt32) {
    self.polynomial = polynomial
    table = (0..<256).map { (n: UInt32) -> UInt32 in
      var c = n
      for _ in 0..<8 { c = c & 1 != 0 ? polynomial ^ (c >> 1) : c >> 1 }
      return c
    }
  }

  /// IEEE 802.3, reflected 0xEDB88320 (GPT).
  public static let ieee = ReflectedCRC32(polynomial: 0xEDB8_8320)
  /// Castagnoli, reflected 0x82F63B78 (VHDX).
  public static let castagnoli = ReflectedCRC32(polynomial: 0x82F6_3B78)

  /// Feeds `bytes` into a running state: start from 0xFFFFFFFF and invert the final state.
  public func update(_ state: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
    var c = state
    table.withUnsafeBufferPointer { table in
      for byte in bytes { c = table[Int((c ^ UInt32(byte)) & 0xFF)] ^ (c >> 8) }
    }
    return c
  }

  /// The CRC of `bytes`, continuing from `crc` (the CRC of the bytes before them; 0 to start), so
  /// `checksum(b, continuing: checksum(a)) == checksum(a + b)`, as zlib's `crc32(crc, buf, len)`.
  public func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
    ~update(~crc, bytes)
  }

  public func checksum(_ bytes: ArraySlice<UInt8>, continuing crc: UInt32 = 0) -> UInt32 {
    bytes.withUnsafeBytes { checksum($0, continuing: crc) }
  }

  public func checksum(_ bytes: [UInt8], continuing crc: UInt32 = 0) -> UInt32 {
    bytes.withUnsafeBytes { checksum($0, continuing: crc) }
  }
}
