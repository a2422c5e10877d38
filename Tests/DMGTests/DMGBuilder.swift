import Foundation
import TestSupport

/// Builds UDIF images in test code from the format's layout (the koly trailer, an XML property
/// list whose blkx entries hold base64 mish tables, and a data fork of chunks), with the
/// compressed chunks made by Python's zlib, bz2 and lzma modules (independent of vdiskfs'
/// decoders) and ADC by a small encoder here.
struct DMGBuilder {
  /// One chunk: its type, first sector within its partition, sector count and stored bytes.
  struct ChunkSpec {
    var type: UInt32
    var sector: UInt64
    var sectorCount: UInt64
    var stored: [UInt8] = []
    /// Override of the stored offset / length written to the table (hostile images).
    var offset: UInt64? = nil
    var length: UInt64? = nil
  }

  struct PartitionSpec {
    var firstSector: UInt64
    var chunks: [ChunkSpec]
  }

  var partitions: [PartitionSpec] = []
  var sectorCount: UInt64 = 0
  /// Bytes before the data fork (the trailer's data fork offset).
  var dataForkOffset: UInt64 = 0
  /// Tables in a classic resource fork instead of the XML property list (the trailer's XML
  /// offset and length zero), and a change to the fork's bytes (hostile images).
  var resourceFork = false
  var forkPatch: ((inout [UInt8]) -> Void)? = nil

  static let zero: UInt32 = 0
  static let raw: UInt32 = 1
  static let ignore: UInt32 = 2
  static let adc: UInt32 = 0x8000_0004
  static let zlib: UInt32 = 0x8000_0005
  static let bzip2: UInt32 = 0x8000_0006
  static let lzfse: UInt32 = 0x8000_0007
  static let lzma: UInt32 = 0x8000_0008
  static let comment: UInt32 = 0x7FFF_FFFE
  static let terminator: UInt32 = 0xFFFF_FFFF

  /// `data` compressed by Python's `module` (zlib, bz2 or lzma), with `options` added to the
  /// call (", format=lzma.FORMAT_ALONE"). lzma's default container is .xz (FORMAT_XZ).
  static func compress(_ data: [UInt8], _ module: String, options: String = "", scratch: Scratch) throws
    -> [UInt8]
  {
    let input = scratch.file("chunk-\(UUID().uuidString).in")
    let output = input + ".out"
    try Data(data).write(to: URL(fileURLWithPath: input))
    try run(
      "python3",
      [
        "-c",
        "import sys, \(module); open(sys.argv[2], 'wb').write(\(module).compress(open(sys.argv[1], 'rb').read()\(options)))",
        input, output,
      ])
    return [UInt8](try Data(contentsOf: URL(fileURLWithPath: output)))
  }

  /// ADC: literal runs of up to 128 bytes, and a three-byte match op (up to 67 bytes, distance
  /// up to 65536) or a two-byte op (3 to 18 bytes, distance up to 1024) wherever the previous
  /// bytes repeat (a greedy search over a few candidate distances).
  static func adcEncode(_ data: [UInt8]) -> [UInt8] {
    var out: [UInt8] = []
    var literals: [UInt8] = []
    func flush() {
      var i = 0
      while i < literals.count {
        let n = min(128, literals.count - i)
        out.append(0x80 | UInt8(n - 1))
        out += literals[i..<i + n]
        i += n
      }
      literals.removeAll()
    }
    var i = 0
    while i < data.count {
      var best = (length: 0, distance: 0)
      for distance in [1, 2, 3, 4, 7, 16, 100, 512, 1024, 4096, 65536] where distance <= i {
        var n = 0
        while n < 67, i + n < data.count, data[i + n] == data[i + n - distance] { n += 1 }
        if n > best.length { best = (n, distance) }
      }
      if best.length >= 4 || (best.length >= 3 && best.distance <= 1024) {
        flush()
        if best.distance <= 1024, best.length <= 18 {
          out.append(UInt8((best.length - 3) << 2) | UInt8((best.distance - 1) >> 8))
          out.append(UInt8((best.distance - 1) & 0xFF))
        } else {
          out.append(0x40 | UInt8(best.length - 4))
          out.append(UInt8((best.distance - 1) >> 8))
          out.append(UInt8((best.distance - 1) & 0xFF))
        }
        i += best.length
      } else {
        literals.append(data[i])
        i += 1
      }
    }
    flush()
    return out
  }

  static func be32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (24 - 8 * $0)) } }
  static func be64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (56 - 8 * $0)) } }

  /// The mish table of `partition`, with each chunk's stored bytes at `offsets`.
  static func mish(_ partition: PartitionSpec, offsets: [UInt64]) -> [UInt8] {
    var t = be32(0x6D69_7368) + be32(1) + be64(partition.firstSector)
    let last = partition.chunks.map { $0.sector + $0.sectorCount }.max() ?? 0
    t += be64(last) + be64(0) + be32(0) + be32(0) + [UInt8](repeating: 0, count: 24)
    t += be32(2) + be32(32) + [UInt8](repeating: 0, count: 128)  // checksum: CRC32 (not checked)
    t += be32(UInt32(partition.chunks.count))
    for (chunk, offset) in zip(partition.chunks, offsets) {
      t += be32(chunk.type) + be32(0) + be64(chunk.sector) + be64(chunk.sectorCount)
      t += be64(chunk.offset ?? offset) + be64(chunk.length ?? UInt64(chunk.stored.count))
    }
    return t
  }

  /// The property list around `tables` (base64 wrapped at 52 columns as hdiutil writes it).
  static func plist(_ tables: [[UInt8]]) -> [UInt8] {
    var xml = """
      <?xml version="1.0" encoding="UTF-8"?>
      <!-- made by vdiskfs tests -->
      <plist version="1.0">
      <dict>
      \t<key>resource-fork</key>
      \t<dict>
      \t\t<key>blkx</key>
      \t\t<array>

      """
    for (i, table) in tables.enumerated() {
      let text = Data(table).base64EncodedString()
      var wrapped = ""
      var rest = Substring(text)
      while !rest.isEmpty {
        wrapped += "\t\t\t" + rest.prefix(52) + "\n"
        rest = rest.dropFirst(52)
      }
      xml += """
        \t\t\t<dict>
        \t\t\t\t<key>Attributes</key>
        \t\t\t\t<string>0x0050</string>
        \t\t\t\t<key>Data</key>
        \t\t\t\t<data>
        \(wrapped)\t\t\t\t</data>
        \t\t\t\t<key>ID</key>
        \t\t\t\t<string>\(i - 1)</string>
        \t\t\t\t<key>Name</key>
        \t\t\t\t<string>partition &amp; \(i)</string>
        \t\t\t</dict>

        """
    }
    xml += "\t\t</array>\n\t</dict>\n</dict>\n</plist>\n"
    return Array(xml.utf8)
  }

  /// A resource fork as the Resource Manager lays it out ("Inside Macintosh: More Macintosh
  /// Toolbox", "Format of a Resource Fork"): a 16-byte header padded to 256 bytes, the resource
  /// data (each a 4-byte length and the bytes: the 'blkx' tables first, then one 'plst'
  /// resource of zeros, as hdiutil's images have), the map (a copy of the header, handle, file
  /// reference and attributes, the type list and name list offsets; the type list of 'blkx' and
  /// 'plst', their reference lists, and a name list of Pascal strings).
  static func resourceFork(_ tables: [[UInt8]]) -> [UInt8] {
    func be16(_ v: Int) -> [UInt8] { [UInt8(truncatingIfNeeded: v >> 8), UInt8(truncatingIfNeeded: v)] }
    var data: [UInt8] = []
    var offsets: [Int] = []
    for resource in tables + [[UInt8](repeating: 0, count: 64)] {
      offsets.append(data.count)
      data += be32(UInt32(resource.count)) + resource
    }
    var names: [UInt8] = []
    var nameOffsets: [Int] = []
    for i in tables.indices {
      let name = Array("partition \(i)".utf8)
      nameOffsets.append(names.count)
      names += [UInt8(name.count)] + name
    }
    let typeList = 28
    let blkxRefs = 2 + 2 * 8  // from the type list: after its count and two entries
    let plstRefs = blkxRefs + 12 * tables.count
    var typeBytes = be16(1)  // two types
    typeBytes += Array("blkx".utf8) + be16(tables.count - 1) + be16(blkxRefs)
    typeBytes += Array("plst".utf8) + be16(0) + be16(plstRefs)
    for (i, offset) in offsets.dropLast().enumerated() {
      typeBytes += be16(i - 1) + be16(nameOffsets[i]) + [0x50] + Array(be32(UInt32(offset)).dropFirst())
      typeBytes += be32(0)
    }
    typeBytes +=
      be16(0) + be16(0xFFFF) + [0x50] + Array(be32(UInt32(offsets.last ?? 0)).dropFirst()) + be32(0)
    let nameList = typeList + typeBytes.count
    let mapLength = nameList + names.count
    let header =
      be32(256) + be32(UInt32(256 + data.count)) + be32(UInt32(data.count)) + be32(UInt32(mapLength))
    var fork = header + [UInt8](repeating: 0, count: 256 - header.count) + data
    fork += header + be32(0) + be16(0) + be16(0) + be16(typeList) + be16(nameList) + typeBytes + names
    return fork
  }

  /// The whole image: `dataForkOffset` bytes of padding, every chunk's stored bytes, the
  /// property list (or `xmlOverride`) or the resource fork, the trailer.
  func build(xmlOverride: [UInt8]? = nil) -> [UInt8] {
    var image = [UInt8](repeating: 0xEE, count: Int(dataForkOffset))
    var tables: [[UInt8]] = []
    for partition in partitions {
      var offsets: [UInt64] = []
      for chunk in partition.chunks {
        offsets.append(UInt64(image.count) - dataForkOffset)
        image += chunk.stored
      }
      tables.append(Self.mish(partition, offsets: offsets))
    }
    let dataForkLength = UInt64(image.count) - dataForkOffset
    var xml = xmlOverride ?? Self.plist(tables)
    var fork: [UInt8] = []
    if resourceFork {
      fork = Self.resourceFork(tables)
      forkPatch?(&fork)
      xml = []
    }
    let forkOffset = UInt64(image.count)
    image += fork
    let xmlOffset = xml.isEmpty ? 0 : UInt64(image.count)
    image += xml
    var koly = Array("koly".utf8) + Self.be32(4) + Self.be32(512) + Self.be32(1)
    koly += Self.be64(0) + Self.be64(dataForkOffset) + Self.be64(dataForkLength)
    koly += Self.be64(fork.isEmpty ? 0 : forkOffset) + Self.be64(UInt64(fork.count))
    koly += Self.be32(1) + Self.be32(1) + [UInt8](repeating: 0, count: 16)
    koly += Self.be32(2) + Self.be32(32) + [UInt8](repeating: 0, count: 128)
    koly += Self.be64(xmlOffset) + Self.be64(UInt64(xml.count))
    koly += [UInt8](repeating: 0, count: 120)
    koly += Self.be32(2) + Self.be32(32) + [UInt8](repeating: 0, count: 128)
    koly += Self.be32(1) + Self.be64(sectorCount) + [UInt8](repeating: 0, count: 12)
    precondition(koly.count == 512)
    return image + koly
  }
}
