import Foundation
import TestSupport
import VDiskCore

/// Little-endian fields of a hosted sparse extent header (vmdk spec, "File header").
struct SparseHeaderFields {
  var grainDirectory: UInt64
  var redundantDirectory: UInt64
  var tableEntries: Int
  var directoryEntries: Int
  var dirtyByte: UInt8

  init(_ path: String) throws {
    let bytes = LEBytes(bytes: Array(try readFile(path).prefix(512)))
    let capacity = bytes.u64(12)
    let grain = bytes.u64(20)
    tableEntries = Int(bytes.u32(44))
    redundantDirectory = bytes.u64(48) * 512
    grainDirectory = bytes.u64(56) * 512
    let coverage = UInt64(tableEntries) * grain
    directoryEntries = Int((capacity + coverage - 1) / coverage)
    dirtyByte = bytes.bytes[72]
  }

  /// Entries of the primary or the redundant directory.
  func directory(_ path: String, redundant: Bool = false) throws -> [UInt64] {
    let bytes = LEBytes(bytes: try readFile(path))
    let at = Int(redundant ? redundantDirectory : grainDirectory)
    return (0..<directoryEntries).map { bytes.u32(at + $0 * 4) }
  }

  /// Empties GD entries `indices` in both directories (their tables become leaked space): an
  /// image whose grain tables do not all exist, as other tools make them.
  func emptyDirectoryEntries(_ path: String, _ indices: [Int]) throws {
    for index in indices {
      try patchLE(path, at: grainDirectory + UInt64(index) * 4, 0, width: 4)
      if redundantDirectory != 0 {
        try patchLE(path, at: redundantDirectory + UInt64(index) * 4, 0, width: 4)
      }
    }
  }
}
