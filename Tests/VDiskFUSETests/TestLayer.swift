import Foundation
import Synchronization
import TestSupport
import VDiskCore

/// A layer over a temp file whose every 8-byte word encodes its own offset; segments of it
/// answer `.data` (identity mapping into the file), `.zero`, `.unallocated`, or throw `.corrupt`.
final class TestLayer: ImageLayer {
  enum Kind: Sendable { case data, zero, unallocated, corrupt }
  struct Segment: Sendable {
    var start: UInt64
    var end: UInt64
    var kind: Kind
  }

  let formatName = "test"
  let file: ImageFile
  let virtualSize: UInt64
  let backing: (any ImageLayer)? = nil
  /// Sorted, non-overlapping; bytes outside every segment are `.data`.
  let segments: [Segment]
  /// The whole guest content (corrupt ranges as the pattern).
  let content: [UInt8]
  /// How many times the chain asked where bytes are: each read that reached the daemon.
  let lookups = Atomic<Int>(0)

  var info: ImageInfo { ImageInfo(format: formatName, filename: file.path, virtualSize: virtualSize) }

  /// Writes the pattern file `path` of `size` bytes (a multiple of 8) and opens it.
  init(path: String, size: UInt64, segments: [Segment]) throws {
    var words = (0..<Int(size / 8)).map { Self.word(at: UInt64($0) * 8) }
    try words.withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: path)) }
    file = try ImageFile.open(path)
    virtualSize = size
    self.segments = segments.sorted { $0.start < $1.start }
    for s in segments where s.kind == .zero || s.kind == .unallocated {
      for w in Int(min(s.start, size) / 8)..<Int(min(s.end, size) / 8) { words[w] = 0 }
    }
    content = words.withUnsafeBytes { [UInt8]($0) }
  }

  static func word(at offset: UInt64) -> UInt64 {
    (offset / 8 &+ 1) &* 0x9E37_79B9_7F4A_7C15 | 1
  }

  func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
    lookups.add(1, ordering: .relaxed)
    var kind = Kind.data
    var end = virtualSize
    for s in segments {
      if offset < s.start {
        end = s.start
        break
      }
      if offset < s.end {
        kind = s.kind
        end = s.end
        break
      }
    }
    let length = min(end - offset, maxLength)
    switch kind {
    case .data: return Extent(offset: offset, length: length, mapping: .data(hostOffset: offset), file: file)
    case .zero: return Extent(offset: offset, length: length, mapping: .zero, file: file)
    case .unallocated: return Extent(offset: offset, length: length, mapping: .unallocated, file: file)
    case .corrupt: throw VDiskError.corrupt(file.path, at: offset, "test corruption")
    }
  }

  /// What the guest sees at `[offset, offset + count)`, short at the end.
  func expected(at offset: UInt64, count: Int) -> [UInt8] {
    guard offset < virtualSize else { return [] }
    let end = Int(min(virtualSize, offset + UInt64(count)))
    return Array(content[Int(offset)..<end])
  }
}

/// A 64 MiB-or-so test disk: data, a zero run, data, an unallocated run, data to the end.
func standardSegments(size: UInt64) -> [TestLayer.Segment] {
  [
    TestLayer.Segment(start: 4 << 20, end: 6 << 20, kind: .zero),
    TestLayer.Segment(start: 10 << 20, end: (10 << 20) + 65536, kind: .unallocated),
  ]
}
