import Testing
import VDiskCore

/// The engine's cache of decompressed units: one decompression per unit for small reads, none
/// cached for a whole-unit read, failures neither cached nor leaking bytes.
@Suite struct DecompressedUnitsTests {
  static let unit = 4096
  let file: ImageFile

  init() throws {
    file = try ImageFile(
      source: MemorySource([UInt8](repeating: 0, count: 1 << 16)), path: "units", isWritable: false)
  }

  func descriptor(_ host: UInt64) -> CompressedDescriptor {
    CompressedDescriptor(
      hostOffset: host, compressedLength: 100, guestOffset: host, decompressedLength: Self.unit)
  }

  /// A unit whose bytes name its host offset and position.
  static func fill(_ host: UInt64) -> (UnsafeMutableRawBufferPointer) throws -> Void {
    { out in for i in 0..<out.count { out[i] = UInt8(truncatingIfNeeded: Int(host) &+ i) } }
  }

  @Test func smallReadsDecompressOnce() throws {
    let units = DecompressedUnits(unitSize: Self.unit, budget: 2 * Self.unit)
    var calls = 0
    for start in stride(from: 0, to: Self.unit, by: 512) {
      var buffer = [UInt8](repeating: 0, count: 512)
      try buffer.withUnsafeMutableBytes { out in
        try units.copy(descriptor(8192), in: file, into: out, skipping: start) { unit in
          calls += 1
          try Self.fill(8192)(unit)
        }
      }
      #expect(buffer == (start..<start + 512).map { UInt8(truncatingIfNeeded: 8192 + $0) })
    }
    #expect(calls == 1)
    #expect(units.decompressionCount == 1)
  }

  @Test func wholeUnitReadsAreNotCached() throws {
    let units = DecompressedUnits(unitSize: Self.unit, budget: 2 * Self.unit)
    var buffer = [UInt8](repeating: 0, count: Self.unit)
    for _ in 0..<2 {
      try buffer.withUnsafeMutableBytes {
        try units.copy(descriptor(0), in: file, into: $0, skipping: 0, decompress: Self.fill(0))
      }
    }
    #expect(units.decompressionCount == 2)
    #expect(buffer == (0..<Self.unit).map { UInt8(truncatingIfNeeded: $0) })
  }

  @Test func failuresAreNotCachedAndLeaveZeros() throws {
    struct Broken: Error {}
    let units = DecompressedUnits(unitSize: Self.unit, budget: 2 * Self.unit)
    var buffer = [UInt8](repeating: 0xEE, count: Self.unit)
    #expect(throws: Broken.self) {
      try buffer.withUnsafeMutableBytes { out in
        try units.copy(descriptor(0), in: file, into: out, skipping: 0) { unit in
          unit.initializeMemory(as: UInt8.self, repeating: 0x77)
          throw Broken()
        }
      }
    }
    #expect(buffer.allSatisfy { $0 == 0 })
    var small = [UInt8](repeating: 0, count: 16)
    try small.withUnsafeMutableBytes {
      try units.copy(descriptor(0), in: file, into: $0, skipping: 16, decompress: Self.fill(0))
    }
    #expect(small == (16..<32).map { UInt8($0) })
    #expect(units.decompressionCount == 1)
    #expect(throws: VDiskError.self) {
      try small.withUnsafeMutableBytes {
        try units.copy(descriptor(0), in: file, into: $0, skipping: Self.unit - 8, decompress: Self.fill(0))
      }
    }
  }
}
