/// How the whole-chain target reads one input: a 29-byte header, then the top image's bytes,
/// then its parent's.
///
///     byte 0        flags: bit 0 = open the top for writing and write through it
///     bytes 1..<5   the top image's length (little-endian, taken modulo what follows the header)
///     bytes 5..<29  three guest offsets (little-endian, each taken modulo the virtual size)
///                   where the writes go
///
/// Seeds are made the same way (`scripts/fuzz.sh`, `chain_seed`), so the fuzzer starts from real
/// child/parent pairs and mutates the split, the offsets and both images.
public struct ChainInput {
  public static let headerSize = 29

  public var writes: Bool
  public var top: [UInt8]
  public var parent: [UInt8]
  public var offsets: [UInt64]

  public init(_ bytes: [UInt8]) {
    guard bytes.count >= Self.headerSize else {
      self.init(writes: false, top: bytes, parent: [], offsets: [])
      return
    }
    let body = bytes[Self.headerSize...]
    let split = body.isEmpty ? 0 : Int(Self.little(bytes[1..<5]) % UInt64(body.count + 1))
    self.init(
      writes: bytes[0] & 1 != 0,
      top: Array(body.prefix(split)),
      parent: Array(body.dropFirst(split)),
      offsets: (0..<3).map { Self.little(bytes[(5 + 8 * $0)..<(13 + 8 * $0)]) })
  }

  init(writes: Bool, top: [UInt8], parent: [UInt8], offsets: [UInt64]) {
    self.writes = writes
    self.top = top
    self.parent = parent
    self.offsets = offsets
  }

  static func little(_ bytes: ArraySlice<UInt8>) -> UInt64 {
    bytes.reversed().reduce(0) { $0 << 8 | UInt64($1) }
  }
}
