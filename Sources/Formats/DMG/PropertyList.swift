import VDiskCore

/// The XML property list a DMG's trailer points to, as far as vdiskfs reads it:
/// `plist/dict/resource-fork/blkx`, an array of dicts whose `Data` is the base64 of one `mish`
/// block table per partition. Parsed by the strict `DescriptorXML` (no DOCTYPE, no entity
/// expansion, bounded size, depth and element count).
enum PropertyList {
  /// plist > dict > dict > array > dict > data is six deep; allow some slack, no more.
  static let maxDepth = 16
  /// Five elements per partition and a few around them; a DMG has tens of partitions.
  static let maxElements = 100_000

  /// The decoded `Data` of every `blkx` entry, in document order.
  static func blkxTables(_ bytes: [UInt8], path: String) throws -> [[UInt8]] {
    let root = try DescriptorXML.parse(
      bytes, path: path, what: "DMG property list", maxBytes: Int(KolyTrailer.maxXMLLength),
      maxDepth: maxDepth,
      maxElements: maxElements)
    guard root.name == "plist", let top = root.child("dict") else {
      throw VDiskError.corrupt(path, "DMG property list has no <plist><dict>")
    }
    guard let fork = value(in: top, key: "resource-fork"), fork.name == "dict" else {
      throw VDiskError.corrupt(path, "DMG property list has no resource-fork dictionary")
    }
    guard let blkx = value(in: fork, key: "blkx"), blkx.name == "array" else {
      throw VDiskError.corrupt(path, "DMG property list has no blkx array")
    }
    var tables: [[UInt8]] = []
    for (i, entry) in blkx.children.enumerated() {
      guard entry.name == "dict", let data = value(in: entry, key: "Data"), data.name == "data" else {
        throw VDiskError.corrupt(path, "DMG blkx entry \(i) has no Data")
      }
      guard let table = Base64.decode(data.text) else {
        throw VDiskError.corrupt(path, "DMG blkx entry \(i): Data is not valid base64")
      }
      tables.append(table)
    }
    return tables
  }

  /// The element after `<key>key</key>` in a plist dict.
  static func value(in dict: XMLElement, key: String) -> XMLElement? {
    let children = dict.children
    for i in children.indices.dropLast() where children[i].name == "key" {
      if children[i].text.trimmingWhitespace == key { return children[i + 1] }
    }
    return nil
  }
}

/// Strict base64 (RFC 4648 alphabet, `=` padding only at the end); white space is skipped, as
/// property lists wrap `<data>` lines.
enum Base64 {
  static func decode(_ text: String) -> [UInt8]? {
    var out: [UInt8] = []
    out.reserveCapacity(text.utf8.count / 4 * 3)
    var quantum: UInt32 = 0
    var count = 0
    var padding = 0
    for c in text.utf8 {
      let value: UInt32
      switch c {
      case 0x41...0x5A: value = UInt32(c - 0x41)
      case 0x61...0x7A: value = UInt32(c - 0x61 + 26)
      case 0x30...0x39: value = UInt32(c - 0x30 + 52)
      case 0x2B: value = 62
      case 0x2F: value = 63
      case 0x3D:
        padding += 1
        value = 0
      case 0x20, 0x09, 0x0A, 0x0D: continue
      default: return nil
      }
      if padding > 0, c != 0x3D { return nil }  // data after padding
      guard padding <= 2 else { return nil }
      quantum = quantum << 6 | value
      count += 1
      if count == 4 {
        out.append(UInt8(truncatingIfNeeded: quantum >> 16))
        if padding < 2 { out.append(UInt8(truncatingIfNeeded: quantum >> 8)) }
        if padding < 1 { out.append(UInt8(truncatingIfNeeded: quantum)) }
        quantum = 0
        count = 0
      }
    }
    return count == 0 ? out : nil
  }
}
