import Foundation
import TestSupport

/// `count` bytes of the file at `path` from `offset` (fewer at its end).
func fileBytes(_ path: String, at offset: UInt64, count: Int) throws -> [UInt8] {
  let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
  defer { try? handle.close() }
  try handle.seek(toOffset: offset)
  return [UInt8](try handle.read(upToCount: count) ?? Data())
}

/// The size of the file at `path`.
func fileLength(_ path: String) throws -> UInt64 {
  (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.uint64Value ?? 0
}

/// Writes `bytes` at `offset` of the file at `path` (which exists), in place.
func patchFile(_ path: String, at offset: UInt64, _ bytes: [UInt8]) throws {
  let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
  defer { try? handle.close() }
  try handle.seek(toOffset: offset)
  try handle.write(contentsOf: Data(bytes))
}
