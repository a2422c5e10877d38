import VDiskCore

/// The classic resource fork a UDIF trailer names (koly +40, +48) when it has no XML property
/// list; its 'blkx' resources hold the same `mish` tables as the list's `blkx` array. QEMU's
/// block/dmg.c reads such images (and 7-Zip's DMG handler, and dmg2img).
///
/// Fork header ("Inside Macintosh: More Macintosh Toolbox", "Format of a Resource Fork"),
/// 16 bytes, big-endian: offset from the fork to the resource data +0, to the resource map +4,
/// length of the resource data +8, of the map +12. In the resource data each resource is a
/// 4-byte length and that many bytes; `ResourceMap` says where the 'blkx' ones start.
enum ResourceFork {
  static let headerSize = 16

  /// The data of every 'blkx' resource, in the map's order. Every offset and length is bounded
  /// against the fork (itself bounded by the trailer), the data and the map may not overlap
  /// each other or the header, and no two resources may share bytes.
  static func blkxTables(file: ImageFile, trailer: KolyTrailer) throws -> [[UInt8]] {
    let path = file.path
    let base = trailer.resourceForkOffset
    func fail(_ detail: String) -> VDiskError {
      VDiskError.corrupt(path, at: base, "DMG resource fork at \(hex(base)): \(detail)")
    }
    let fork = try file.readBytes(
      at: base, count: Int(trailer.resourceForkLength), what: "DMG resource fork")
    let r = ByteReader(fork, path: path, baseOffset: base)
    guard fork.count >= headerSize else {
      throw fail("\(fork.count) bytes are too small for its header")
    }
    let data = try region(r, at: 0, "resource data", fail: fail)
    let map = try region(r, at: 4, "resource map", fail: fail)
    guard data.upperBound <= map.lowerBound || map.upperBound <= data.lowerBound else {
      throw fail("resource data \(data) and resource map \(map) overlap")
    }
    let references = try ResourceMap(
      ByteReader(Array(fork[map]), path: path, baseOffset: base + UInt64(map.lowerBound)),
      fail: fail
    ).blkx
    guard !references.isEmpty else { throw fail("no 'blkx' resources") }

    var resources: [(range: Range<Int>, id: Int16)] = []
    resources.reserveCapacity(references.count)
    for reference in references {
      let offset = reference.dataOffset
      guard data.count >= 4, offset <= data.count - 4 else {
        throw fail(
          "'blkx' resource \(reference.id) at data offset \(offset) lies beyond the \(data.count) bytes of resource data"
        )
      }
      let start = data.lowerBound + offset
      let length = Int(try r.u32be(start, "resource length"))
      guard length <= data.count - offset - 4 else {
        throw fail(
          "'blkx' resource \(reference.id) of \(length) bytes at data offset \(offset) runs past the \(data.count) bytes of resource data"
        )
      }
      resources.append((start..<start + 4 + length, reference.id))
    }
    // Two references to one resource (or a type listed twice) would read its chunks twice.
    let sorted = resources.sorted { $0.range.lowerBound < $1.range.lowerBound }
    for (a, b) in zip(sorted, sorted.dropFirst()) where a.range.overlaps(b.range) {
      throw fail("'blkx' resources \(a.id) and \(b.id) overlap")
    }
    return resources.map { Array(fork[$0.range.lowerBound + 4..<$0.range.upperBound]) }
  }

  /// The byte range of the region whose offset is at header `field` and length at `field + 8`,
  /// inside the fork and after its header.
  static func region(
    _ r: ByteReader, at field: Int, _ name: String, fail: (String) -> VDiskError
  ) throws -> Range<Int> {
    let offset = Int(try r.u32be(field, "\(name) offset"))
    let length = Int(try r.u32be(field + 8, "\(name) length"))
    guard offset >= headerSize, offset <= r.count, length <= r.count - offset else {
      throw fail("\(name) (offset \(offset), \(length) bytes) lies outside the fork's \(r.count) bytes")
    }
    return offset..<offset + length
  }
}
