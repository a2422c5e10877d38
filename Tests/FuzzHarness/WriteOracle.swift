import VDiskCore

/// Writes through a chain opened read-write and checks that the guest then reads what was
/// written: three operations at guest offsets the input chose (a 4 KiB aligned write, an
/// unaligned 1000-byte write, a 4 KiB zero range), each read back at once, then a flush. An
/// operation may throw (a hostile image is refused mid-write); one that returns must have done
/// what it said, or the process traps: that is a finding, like a sanitizer report.
public struct WriteOracle {
  /// The operations that succeeded, in order: where each put which bytes (a later one wins).
  private var done: [(offset: UInt64, bytes: [UInt8])] = []

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
        done.append((offset, [UInt8](repeating: 0, count: count)))
      } else {
        let bytes = (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ index &* 31 &+ 1) }
        let written = try bytes.withUnsafeBytes { try chain.write($0, at: offset) }
        guard written == count else {
          fatalError("write of \(count) bytes at \(offset) returned \(written)")
        }
        done.append((offset, bytes))
      }
      try verify(chain, offset: offset, count: count, when: "after operation \(index)")
    }
    try chain.flush()
  }

  /// Traps unless every byte an operation set reads back from `chain`.
  public func verifyAll(_ chain: LayerChain, when: String) throws {
    for operation in done where operation.offset + UInt64(operation.bytes.count) <= chain.virtualSize {
      try verify(chain, offset: operation.offset, count: operation.bytes.count, when: when)
    }
  }

  /// The byte the last operation covering guest byte `position` set, if any.
  private func expected(at position: UInt64) -> UInt8? {
    for operation in done.reversed()
    where position >= operation.offset && position - operation.offset < UInt64(operation.bytes.count) {
      return operation.bytes[Int(position - operation.offset)]
    }
    return nil
  }

  private func verify(_ chain: LayerChain, offset: UInt64, count: Int, when: String) throws {
    var buffer = [UInt8](repeating: 0xEE, count: count)
    _ = try buffer.withUnsafeMutableBytes { try chain.read(into: $0, at: offset) }
    for i in 0..<count {
      if let want = expected(at: offset + UInt64(i)), buffer[i] != want {
        fatalError("guest byte \(offset + UInt64(i)) reads \(buffer[i]), \(want) was written (\(when))")
      }
    }
  }
}
