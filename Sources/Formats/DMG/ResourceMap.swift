import VDiskCore

/// The resource map of a classic Mac OS resource fork ("Inside Macintosh: More Macintosh
/// Toolbox", Resource Manager, "Format of a Resource Fork"), big-endian, as far as a DMG needs
/// it: where the resources of type 'blkx' (one `mish` table each) lie in the resource data.
///
/// Map header: 16 reserved bytes (a copy of the fork header), next-map handle +16, file
/// reference +20, attributes +22, offset from the map to the type list +24 and to the name list
/// +26. Type list: the number of types minus one (2 bytes), then 8-byte entries: the type code,
/// the number of resources of the type minus one (2), the offset from the type list to the
/// type's reference list (2). Reference list: 12-byte entries: resource ID +0, name offset +2,
/// attributes +4, offset from the start of the resource data to the resource +5 (3 bytes),
/// reserved handle +8. Names are not read.
struct ResourceMap {
  static let headerSize = 28
  static let typeEntrySize = 8
  static let referenceSize = 12
  static let blkx: UInt32 = 0x626C_6B78  // "blkx"

  /// One 'blkx' resource: its ID and where its data (a 4-byte length, then the bytes) starts,
  /// from the start of the resource data.
  struct Reference: Equatable {
    var id: Int16
    var dataOffset: Int
  }

  /// Every 'blkx' reference, in the order of the map's type and reference lists.
  let blkx: [Reference]

  /// Parses `map` (the map's bytes; `r` reads them with the fork's offsets in its errors):
  /// the type list and every reference list inside the map.
  init(_ r: ByteReader, fail: (String) -> VDiskError) throws {
    let size = r.count
    guard size >= Self.headerSize + 2 else {
      throw fail("resource map of \(size) bytes is too small for its header and type list")
    }
    let typeList = Int(try r.u16be(24, "type list offset"))
    guard typeList >= Self.headerSize, typeList <= size - 2 else {
      throw fail("type list offset \(typeList) lies outside the resource map of \(size) bytes")
    }
    // 0xFFFF (minus one) is an empty list.
    let types = (Int(try r.u16be(typeList, "type count")) + 1) & 0xFFFF
    guard types <= (size - typeList - 2) / Self.typeEntrySize else {
      throw fail("type list of \(types) types runs past the resource map of \(size) bytes")
    }
    var found: [Reference] = []
    for t in 0..<types {
      let entry = typeList + 2 + t * Self.typeEntrySize
      guard try r.u32be(entry, "resource type") == Self.blkx else { continue }
      let count = Int(try r.u16be(entry + 4, "resource count")) + 1
      let list = typeList + Int(try r.u16be(entry + 6, "reference list offset"))
      guard list <= size, count <= (size - list) / Self.referenceSize else {
        throw fail(
          "reference list of \(count) 'blkx' resources at map offset \(list) runs past the resource map of \(size) bytes"
        )
      }
      for i in 0..<count {
        let reference = list + i * Self.referenceSize
        let id = Int16(bitPattern: try r.u16be(reference, "resource ID"))
        let offset = Int(try r.u32be(reference + 4, "resource data offset") & 0xFF_FFFF)
        found.append(Reference(id: id, dataOffset: offset))
      }
    }
    blkx = found
  }
}
