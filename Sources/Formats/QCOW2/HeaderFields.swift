import VDiskCore

/// Header fields the writer updates in place (qcow2 spec, "Header"): byte offset and width.
/// Everything else in the header (and its extensions) is never rewritten.
enum HeaderField: Sendable {
  case size
  case l1Size
  case l1TableOffset
  case refcountTableOffset
  case refcountTableClusters
  /// Version 3 only.
  case incompatibleFeatures
  /// Version 3 only.
  case autoclearFeatures

  var offset: UInt64 {
    switch self {
    case .size: 24
    case .l1Size: 36
    case .l1TableOffset: 40
    case .refcountTableOffset: 48
    case .refcountTableClusters: 56
    case .incompatibleFeatures: 72
    case .autoclearFeatures: 88
    }
  }

  var width: Int {
    switch self {
    case .l1Size, .refcountTableClusters: 4
    default: 8
    }
  }
}

extension ImageFile {
  /// Writes `value` big-endian into header field `field`.
  func writeHeaderField(_ field: HeaderField, _ value: UInt64) throws {
    try writeBigEndian(value, width: field.width, at: field.offset)
  }

  /// Writes the low `width` bytes of `value` big-endian at `offset`.
  func writeBigEndian(_ value: UInt64, width: Int, at offset: UInt64) throws {
    var bytes = [UInt8](repeating: 0, count: width)
    for i in 0..<width { bytes[i] = UInt8(truncatingIfNeeded: value >> UInt64(8 * (width - 1 - i))) }
    try bytes.withUnsafeBytes { try write($0, at: offset) }
  }

  /// Writes 64-bit words big-endian at `offset`, zero-padded to `paddedTo` bytes when larger.
  func writeWords(_ words: ArraySlice<UInt64>, at offset: UInt64, paddedTo: Int = 0) throws {
    var bytes = [UInt8](repeating: 0, count: max(words.count * 8, paddedTo))
    for (i, word) in words.enumerated() {
      for b in 0..<8 { bytes[i * 8 + b] = UInt8(truncatingIfNeeded: word >> UInt64(56 - 8 * b)) }
    }
    try bytes.withUnsafeBytes { try write($0, at: offset) }
  }

  /// Reads `count` big-endian 64-bit words at `offset`; bytes past end-of-file read as zeros.
  func readWords(at offset: UInt64, count: Int) throws -> [UInt64] {
    try readTable(
      of: UInt64.self, at: offset, count: count, order: .bigEndian, what: "table", pastEnd: .zeros)
  }
}
