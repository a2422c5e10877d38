import Foundation
import Synchronization
import TestSupport
import VDiskCore

/// A layer whose extents are given by a script of segments, over a real host file, so that the
/// engine can be tested without any format driver.
final class ScriptedLayer: ImageLayer, @unchecked Sendable {
  struct Segment {
    var start: UInt64
    var end: UInt64
    var mapping: Mapping
  }

  let formatName = "scripted"
  let file: ImageFile
  let virtualSize: UInt64
  let backing: (any ImageLayer)?
  let segments: [Segment]
  let extentCalls = Atomic<Int>(0)
  /// When set, extent() answers with this (to test contract enforcement).
  var brokenAnswer: Extent?

  init(file: ImageFile, virtualSize: UInt64, backing: (any ImageLayer)?, segments: [Segment]) {
    self.file = file
    self.virtualSize = virtualSize
    self.backing = backing
    self.segments = segments
  }

  func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
    extentCalls.add(1, ordering: .relaxed)
    if let brokenAnswer { return brokenAnswer }
    guard let s = segments.first(where: { $0.start <= offset && offset < $0.end }) else {
      let next = segments.map(\.start).filter { $0 > offset }.min() ?? UInt64.max
      return Extent(offset: offset, length: min(maxLength, next - offset), mapping: .unallocated, file: file)
    }
    let length = min(maxLength, s.end - offset)
    var mapping = s.mapping
    if case .data(let host) = mapping { mapping = .data(hostOffset: host + (offset - s.start)) }
    return Extent(offset: offset, length: length, mapping: mapping, file: file)
  }

  /// "Decompresses" to bytes whose value is (guest offset & 0xff) ^ 0xa5.
  func decode(_ descriptor: CompressedDescriptor, into buffer: UnsafeMutableRawBufferPointer, skipping: Int)
    throws
  {
    for i in 0..<buffer.count {
      buffer[i] = UInt8(truncatingIfNeeded: (descriptor.guestOffset + UInt64(skipping + i)) & 0xff) ^ 0xa5
    }
  }

  var info: ImageInfo { ImageInfo(format: formatName, filename: file.path, virtualSize: virtualSize) }
}

/// Writes a host file whose byte at offset i is `(i * 7 + seed) & 0xff` and opens it.
func patternFile(_ scratch: Scratch, _ name: String, size: Int, seed: UInt8) throws -> (ImageFile, [UInt8]) {
  let bytes = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7) &+ seed }
  let path = scratch.file(name)
  try Data(bytes).write(to: URL(fileURLWithPath: path))
  return (try ImageFile.open(path), bytes)
}
