/// Reads and writes entries of a refcount block (qcow2 spec, "Host cluster management"): the
/// block is one cluster of `refcount_bits`-wide entries, 1 to 64 bits. Sub-byte entries count
/// from the least significant bit of each byte; wider ones are big-endian. Codec only: no I/O.
struct RefcountCodec: Sendable {
  /// refcount_order: refcount_bits = 1 << order, 0…6.
  let order: UInt32

  var bits: Int { 1 << Int(order) }

  /// The largest refcount an entry holds.
  var maxValue: UInt64 { bits == 64 ? .max : (UInt64(1) << UInt64(bits)) - 1 }

  /// Entries in one refcount block of `clusterSize` bytes: cluster_size * 8 / refcount_bits.
  func entries(clusterSize: UInt64) -> UInt64 { clusterSize * 8 / UInt64(bits) }

  /// Entry `index` of `block` (the block's bytes as stored, held in 64-bit words); the caller
  /// keeps `index` below `entries(clusterSize:)`.
  func get(_ words: [UInt64], _ index: Int) -> UInt64 {
    words.withUnsafeBytes { get($0, index) }
  }

  func get(_ block: UnsafeRawBufferPointer, _ index: Int) -> UInt64 {
    if bits < 8 {
      let bit = index * bits
      return UInt64(block[bit >> 3] >> UInt8(bit & 7)) & maxValue
    }
    let width = bits / 8
    var value: UInt64 = 0
    for i in 0..<width { value = value << 8 | UInt64(block[index * width + i]) }
    return value
  }

  /// Sets entry `index` of `block` to `value` (at most `maxValue`).
  func set(_ words: inout [UInt64], _ index: Int, _ value: UInt64) {
    words.withUnsafeMutableBytes { set($0, index, value) }
  }

  func set(_ block: UnsafeMutableRawBufferPointer, _ index: Int, _ value: UInt64) {
    if bits < 8 {
      let bit = index * bits
      let mask = UInt8(truncatingIfNeeded: maxValue) << UInt8(bit & 7)
      let shifted = UInt8(truncatingIfNeeded: value & maxValue) << UInt8(bit & 7)
      block[bit >> 3] = (block[bit >> 3] & ~mask) | shifted
      return
    }
    let width = bits / 8
    for i in 0..<width {
      block[index * width + i] = UInt8(truncatingIfNeeded: value >> UInt64(8 * (width - 1 - i)))
    }
  }
}
