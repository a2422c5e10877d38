import Foundation
import TestSupport
import Testing
import VDiskCore

/// The shared decoders: endian tables, GUIDs, UTF-16 text.
@Suite struct DecodingHelperTests {
  @Test func tablesDecodeInEitherOrder() {
    let bytes: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    #expect([UInt32](decoding: bytes, order: .bigEndian) == [0x0102_0304, 0x0506_0708])
    #expect([UInt32](decoding: bytes, order: .littleEndian) == [0x0403_0201, 0x0807_0605])
    #expect([UInt64](decoding: bytes, order: .bigEndian) == [0x0102_0304_0506_0708])
    #expect([UInt64](decoding: bytes, order: .littleEndian) == [0x0807_0605_0403_0201])
    #expect([UInt16](decoding: [0xAB], order: .bigEndian).isEmpty)
    #expect([UInt64](decoding: [], order: .littleEndian).isEmpty)
  }

  @Test func tablesReadFromAFileStopOrZeroFillAtItsEnd() throws {
    let scratch = try Scratch("tables")
    defer { scratch.remove() }
    let path = scratch.file("t")
    try Data([0, 0, 0, 1, 0, 0, 0, 2, 0xFF, 0xFF]).write(to: URL(fileURLWithPath: path))
    let file = try ImageFile.open(path)
    #expect(try file.readTable(of: UInt32.self, at: 0, count: 2, order: .bigEndian, what: "t") == [1, 2])
    #expect(
      try file.readTable(of: UInt32.self, at: 4, count: 1, order: .littleEndian, what: "t") == [0x0200_0000])
    #expect(try file.readTable(of: UInt32.self, at: 0, count: 0, order: .bigEndian, what: "t").isEmpty)
    expectVDiskError(.corrupt, [path, "my table", "beyond end of file"]) {
      _ = try file.readTable(of: UInt32.self, at: 4, count: 2, order: .bigEndian, what: "my table")
    }
    #expect(
      try file.readTable(of: UInt32.self, at: 4, count: 3, order: .bigEndian, what: "t", pastEnd: .zeros)
        == [2, 0xFFFF_0000, 0])
  }

  @Test func guidTextInBothLayouts() {
    let onDisk: [UInt8] = [
      0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6, 0x00, 0x42, 0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08,
    ]
    let mixed = GUID(onDisk: onDisk[...])
    #expect(mixed.description == "2DC27766-F623-4200-9D64-115E9BFD4A08")
    #expect(mixed == GUID(0x2DC2_7766, 0xF623, 0x4200, [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08]))
    #expect(GUID("{2dc27766-f623-4200-9d64-115e9bfd4a08}") == mixed)
    #expect(GUID("2DC27766-F623-4200-9D64-115E9BFD4A0") == nil)
    #expect(GUID("2DC27766-F623-4200-9D64-115E9BFD4AXX") == nil)
    let rfc = GUID(onDisk: onDisk[...], layout: .bigEndian)
    #expect(rfc.text(uppercase: false) == "6677c22d-23f6-0042-9d64-115e9bfd4a08")
    #expect(rfc != mixed)
    #expect(GUID(onDisk: [1, 2][...]).bytes == [1, 2] + [UInt8](repeating: 0, count: 14))
    #expect(GUID.zero.isZero && !mixed.isZero)
  }

  @Test func utf16TextInBothOrders() {
    let le: [UInt8] = [0x68, 0, 0x69, 0, 0, 0, 0x78, 0]
    #expect(String(utf16: le[...], order: .littleEndian) == "hi")
    #expect(String(utf16: le[...], order: .littleEndian, upToNUL: false) == "hi\0x")
    let be: [UInt8] = [0, 0x68, 0xD8, 0x3D, 0xDE, 0x00, 0, 0x21, 0x7A]  // odd trailing byte
    #expect(String(utf16: be[...], order: .bigEndian) == "h\u{1F600}!")
    // An unpaired surrogate becomes U+FFFD rather than trapping.
    #expect(String(utf16: [0xD8, 0x3D, 0, 0x41][...], order: .bigEndian) == "\u{FFFD}A")
    #expect(String(utf16: [UInt8]()[...], order: .littleEndian).isEmpty)
  }
}

@Suite struct ReflectedCRC32Tests {
  /// The standard check values: CRC of "123456789".
  @Test func checkValues() {
    let digits = Array("123456789".utf8)
    #expect(ReflectedCRC32.ieee.checksum(digits) == 0xCBF4_3926)
    #expect(ReflectedCRC32.castagnoli.checksum(digits) == 0xE306_9283)
    #expect(ReflectedCRC32.ieee.checksum([UInt8]()) == 0)
  }

  @Test func continuesAcrossPieces() {
    let bytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
    for crc in [ReflectedCRC32.ieee, .castagnoli] {
      let whole = crc.checksum(bytes)
      #expect(crc.checksum(bytes[300...], continuing: crc.checksum(bytes[..<300])) == whole)
    }
  }
}
