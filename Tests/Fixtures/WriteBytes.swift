import Foundation

/// Bytes for write number `serial`: a value that changes every 512 bytes, so that misplaced or
/// shifted data shows. Never zero, so that a write never reads like a hole.
public func pattern(_ count: Int, serial: UInt64) -> [UInt8] {
  var bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: serial &* 29 &+ 1) | 1, count: count)
  var i = 0
  while i < count {
    bytes[i] = UInt8(truncatingIfNeeded: serial &+ UInt64(i >> 9) &* 7) | 1
    i += 512
  }
  return bytes
}

/// Whether `a[offset..<offset + b.count]` equals `b` (memcmp; fast in debug builds).
public func same(_ a: [UInt8], _ offset: Int, _ b: [UInt8]) -> Bool {
  guard offset >= 0, offset + b.count <= a.count else { return false }
  return a.withUnsafeBytes { x in
    b.withUnsafeBytes { y in
      guard let xb = x.baseAddress, let yb = y.baseAddress else { return true }
      return memcmp(xb + offset, yb, b.count) == 0
    }
  }
}

/// A checksum of a whole file (FNV-1a over 8-byte words, then its size), to prove that a file
/// (a parent, a backing file, an image opened read-only) never changed.
public func fileChecksum(_ path: String) throws -> UInt64 {
  let data = try Data(contentsOf: URL(fileURLWithPath: path))
  var hash: UInt64 = 0xCBF2_9CE4_8422_2325
  data.withUnsafeBytes { raw in
    let words = raw.count / 8
    for i in 0..<words {
      hash = (hash ^ raw.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)) &* 0x0000_0100_0000_01B3
    }
    for i in words * 8..<raw.count { hash = (hash ^ UInt64(raw[i])) &* 0x0000_0100_0000_01B3 }
  }
  return hash ^ UInt64(data.count)
}
