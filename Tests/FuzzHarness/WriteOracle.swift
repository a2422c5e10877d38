import VDiskCore

/// Writes through a chain opened read-write and checks that the guest then reads what was
/// written: three operations at guest offsets the input chose (a 4 KiB aligned write, an
/// unaligned 1000-byte write, a 4 KiB zero range), each read back at once, then a flush. An
/// operation may throw (a hostile image is refused mid-write); one that returns must have done
/// what it said, or the process traps: that is a finding, like a sanitizer report.
public struct WriteOracle {
  /// Guest bytes that the operations that succeeded set.
  public private(set) var expected: [UInt64: UInt8] = [:]

  public init() {}

  /// Runs the three operations at `offsets` (each modulo the virtual size), then flushes.
  public mutating func run(_ chain: LayerChain, offsets: [UInt64]) throws {
    let size = chain.virtualSize
    guard size > 0 else { return }
    for (index, raw) in offsets.prefix(3).enumerated() {
      var offset = raw % size
      if index == 0 { offset &= ~4095 }
      let count = Int(min(UInt64(index == 1 ? 1000 : 4096), size - offset))
      if index == 2 {
        try chain.discard(at: offset, length: UInt64(count), mode: .zeroRange)
        record([UInt8](repeating: 0, count: count), at: offset)
      } else {
        let bytes = (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ index &* 31 &+ 1) }
        let written = try bytes.withUnsafeBytes { try chain.write($0, at: offset) }
        guard written == count else {
          fatalError("write of \(count) bytes at \(offset) returned \(written)")
        }
        record(bytes, at: offset)
      }
      try verify(chain, offset: offset, count: count, when: "after operation \(index)")
    }
    try chain.flush()
  }

  /// Traps unless every recorded byte reads back from `chain` (one read per run of bytes).
  public func verifyAll(_ chain: LayerChain, when: String) throws {
    for run in Set(expected.keys.map { Int($0) }).runs where UInt64(run.upperBound) <= chain.virtualSize {
      try verify(chain, offset: UInt64(run.lowerBound), count: run.count, when: when)
    }
  }

  private mutating func record(_ bytes: [UInt8], at offset: UInt64) {
    for (i, byte) in bytes.enumerated() { expected[offset + UInt64(i)] = byte }
  }

  private func verify(_ chain: LayerChain, offset: UInt64, count: Int, when: String) throws {
    var buffer = [UInt8](repeating: 0xEE, count: count)
    _ = try buffer.withUnsafeMutableBytes { try chain.read(into: $0, at: offset) }
    for i in 0..<count {
      if let want = expected[offset + UInt64(i)], buffer[i] != want {
        fatalError("guest byte \(offset + UInt64(i)) reads \(buffer[i]), \(want) was written (\(when))")
      }
    }
  }
}
