import Foundation
import TestSupport
import Testing
import VDiskCore

/// Overwrites `width` bytes at `offset` of `path` with `value`, little-endian (QED fields).
func patchLE(_ path: String, at offset: UInt64, _ value: UInt64, width: Int) throws {
  try patch(path, at: offset, bytes: (0..<width).map { UInt8(truncatingIfNeeded: value >> UInt64(8 * $0)) })
}

/// A little-endian u64 of a file.
func u64LE(_ path: String, at offset: UInt64) throws -> UInt64 {
  let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
  defer { try? handle.close() }
  try handle.seek(toOffset: offset)
  let data = try handle.read(upToCount: 8) ?? Data()
  return data.reversed().reduce(0) { $0 << 8 | UInt64($1) }
}

/// The QED header's features field (offset 16).
func qedFeatures(_ path: String) throws -> UInt64 { try u64LE(path, at: 16) }

/// QED_F_NEED_CHECK.
let needCheckBit: UInt64 = 2
