import Foundation
import TestSupport
import Testing
import VDiskCore

/// The VHD checksum (one's complement of the byte sum, the field itself counted as zero).
func vhdChecksum(_ bytes: [UInt8], field: Range<Int>) -> UInt32 {
  var sum: UInt32 = 0
  for (i, b) in bytes.enumerated() where !field.contains(i) { sum &+= UInt32(b) }
  return ~sum
}

func bigEndian(_ value: UInt64, width: Int) -> [UInt8] {
  (0..<width).map { UInt8(truncatingIfNeeded: value >> UInt64(8 * (width - 1 - $0))) }
}

/// Reads `count` bytes of `path` at `offset`.
func readBytes(_ path: String, at offset: UInt64, count: Int) throws -> [UInt8] {
  let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
  defer { try? handle.close() }
  try handle.seek(toOffset: offset)
  return [UInt8](try handle.read(upToCount: count) ?? Data())
}

func fileSize(_ path: String) throws -> UInt64 {
  (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.uint64Value ?? 0
}

/// Recomputes the checksum of the footer at `offset` (0 or file size - 512).
func refreshFooterChecksum(_ path: String, at offset: UInt64) throws {
  var footer = try readBytes(path, at: offset, count: 512)
  footer.replaceSubrange(64..<68, with: [0, 0, 0, 0])
  try patch(path, at: offset + 64, UInt64(vhdChecksum(footer, field: 64..<68)), width: 4)
}

/// Recomputes the checksum of the dynamic disk header at `offset`.
func refreshHeaderChecksum(_ path: String, at offset: UInt64 = 512) throws {
  let header = try readBytes(path, at: offset, count: 1024)
  try patch(path, at: offset + 36, UInt64(vhdChecksum(header, field: 36..<40)), width: 4)
}

/// Patches a footer field in both footers of a dynamic VHD (or the only one of a fixed VHD) and
/// refreshes their checksums.
func patchFooters(_ path: String, at field: UInt64, bytes: [UInt8]) throws {
  let end = try fileSize(path) - 512
  var offsets = [end]
  if try readBytes(path, at: 0, count: 8) == Array("conectix".utf8) { offsets.append(0) }
  for offset in offsets {
    try patch(path, at: offset + field, bytes: bytes)
    try refreshFooterChecksum(path, at: offset)
  }
}
