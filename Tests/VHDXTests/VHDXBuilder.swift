import Foundation
import TestSupport
import VDiskCore
import VHDX

// The builder itself, `VHDXBuilder`, is in TestSupport (Tests/Fixtures/VHDXBuilder.swift), shared
// with the mount tests of vdiskfsTests; these are the byte helpers the VHDX tests patch files with.

/// Little-endian field writers for building VHDX structures in tests.
extension Array where Element == UInt8 {
  mutating func put(_ value: UInt64, at offset: Int, width: Int) {
    for i in 0..<width { self[offset + i] = UInt8(truncatingIfNeeded: value >> UInt64(8 * i)) }
  }

  mutating func put(_ guid: GUID, at offset: Int) {
    replaceSubrange(offset..<offset + 16, with: guid.bytes)
  }

  mutating func put(utf16 text: String, at offset: Int) -> Int {
    var at = offset
    for unit in text.utf16 {
      put(UInt64(unit), at: at, width: 2)
      at += 2
    }
    return at - offset
  }

  func le(_ offset: Int, width: Int) -> UInt64 {
    (0..<width).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64(self[offset + $1]) }
  }

  /// Stores the CRC-32C of the structure (checksum field as zero) at byte 4.
  mutating func seal() {
    put(0, at: 4, width: 4)
    put(UInt64(CRC32C.structureChecksum(self)), at: 4, width: 4)
  }
}

extension GUID {
  static func random() -> GUID {
    var g = SystemRandomNumberGenerator()
    return GUID(onDisk: (0..<16).map { _ in UInt8.random(in: 0...255, using: &g) }[...])
  }
}

/// Reads `count` bytes of `path` at `offset`.
func readFile(_ path: String, at offset: UInt64, count: Int) throws -> [UInt8] {
  let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
  defer { try? handle.close() }
  try handle.seek(toOffset: offset)
  return [UInt8](try handle.read(upToCount: count) ?? Data())
}

/// Writes a little-endian field into `path`.
func patchLE(_ path: String, at offset: UInt64, _ value: UInt64, width: Int) throws {
  var bytes = [UInt8](repeating: 0, count: width)
  bytes.put(value, at: 0, width: width)
  try patch(path, at: offset, bytes: bytes)
}

/// Re-seals the checksum of the `size`-byte structure at `offset` of `path` after a patch.
func reseal(_ path: String, at offset: UInt64, size: Int) throws {
  var bytes = try readFile(path, at: offset, count: size)
  bytes.seal()
  try patch(path, at: offset, bytes: bytes)
}
