import VDiskCore

/// Changing and encoding packed sector bitmaps and BAT pages as the cache holds them (64-bit
/// words, see `VHDBlockTable.bitmap(at:)` and `pageWords(_:)`), for the writer.
extension [UInt64] {
  /// Sets the bits of sectors `sectors` (bit `63 - s % 64` of word `s / 64`; vhd.asciidoc,
  /// "Sector bitmap": MSB first). Sectors past the end of the bitmap are ignored.
  mutating func setSectorBits(_ sectors: Range<Int>) {
    var s = Swift.max(0, sectors.lowerBound)
    while s < sectors.upperBound, s >> 6 < count {
      let bit = s & 63
      let n = Swift.min(64 - bit, sectors.upperBound - s)
      let from = UInt64.max >> UInt64(bit)
      let beyond = bit + n >= 64 ? 0 : UInt64.max >> UInt64(bit + n)
      self[s >> 6] |= from & ~beyond
      s += n
    }
  }

  /// Whether every sector of the non-empty range `sectors` has its bit set.
  func allSectorBitsSet(_ sectors: Range<Int>) -> Bool {
    guard !sectors.isEmpty else { return true }
    guard sectorBit(sectors.lowerBound) else { return false }
    return runLength(from: sectors.lowerBound, limit: sectors.upperBound) >= sectors.count
  }

  /// The words as the bitmap is stored: each word big-endian.
  var bigEndianBytes: [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count * 8)
    for (i, word) in enumerated() {
      for b in 0..<8 { bytes[i * 8 + b] = UInt8(truncatingIfNeeded: word >> UInt64(56 - 8 * b)) }
    }
    return bytes
  }

  /// A BAT page as it is stored: one big-endian 32-bit entry per word (vhd.asciidoc, "Block
  /// allocation table").
  var batEntryBytes: [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count * 4)
    for (i, word) in enumerated() {
      for b in 0..<4 { bytes[i * 4 + b] = UInt8(truncatingIfNeeded: word >> UInt64(24 - 8 * b)) }
    }
    return bytes
  }
}
