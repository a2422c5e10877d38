import VDiskCore

/// The UDIF trailer, the "koly" block: the last 512 bytes of a .dmg, big-endian. Of its fields
/// vdiskfs uses the data fork (where chunk offsets start), the place of the XML property list or,
/// when there is none, of the classic resource fork, and the disk's sector count (QEMU's
/// block/dmg.c reads the same ones, at the same offsets).
public struct KolyTrailer: Sendable {
  static let magic = Array("koly".utf8)
  /// The trailer's size, and where it starts counting back from the end of the file.
  static let size = 512
  /// QEMU's cap on the property list (a 1 TiB image of 1 MiB chunks needs about 60 MiB of
  /// base64 chunk tables; real images are far smaller); the resource fork has the same cap
  /// (its resource data offsets are 24 bits wide; 7-Zip's DMG handler caps it at 16 MiB too).
  static let maxXMLLength: UInt64 = 16 << 20
  /// The most sectors a disk may have: its byte size must fit in a signed 64-bit offset.
  static let maxSectorCount = UInt64(Int64.max) / 512

  /// Where the trailer starts (the end of everything it describes).
  public var offset: UInt64
  /// UDIFDataForkOffset (koly +24): every chunk's offset is relative to it.
  public var dataForkOffset: UInt64
  /// UDIFXMLOffset and UDIFXMLLength (koly +216, +224): the property list with the blkx tables.
  public var xmlOffset: UInt64
  public var xmlLength: UInt64
  /// RsrcForkOffset and RsrcForkLength (koly +40, +48): a classic resource fork whose 'blkx'
  /// resources are the same tables; read only when the property list's length is zero.
  public var resourceForkOffset: UInt64
  public var resourceForkLength: UInt64
  /// UDIFSectorCount (koly +492): the disk's size in 512-byte sectors.
  public var sectorCount: UInt64

  public var virtualSize: UInt64 { sectorCount * 512 }

  /// Whether `tail` (the last 512 bytes of a file) is a koly trailer.
  static func matches(_ tail: [UInt8]) -> Bool {
    tail.count == size && tail.starts(with: magic)
  }

  /// Whether the chunk tables come from the resource fork (the trailer names no property list).
  public var usesResourceFork: Bool { xmlLength == 0 }

  public init(file: ImageFile) throws {
    let path = file.path
    guard file.size >= UInt64(Self.size) else {
      throw VDiskError.corrupt(path, "file of \(file.size) bytes is too small for a DMG trailer")
    }
    offset = file.size - UInt64(Self.size)
    let r = ByteReader(
      try file.readBytes(at: offset, count: Self.size, what: "DMG trailer"), path: path, baseOffset: offset)
    guard Array(try r.bytes(0, count: 4, "magic")) == Self.magic else {
      throw VDiskError.corrupt(path, at: offset, "no DMG \"koly\" trailer in the last 512 bytes")
    }
    dataForkOffset = try r.u64be(24, "data fork offset")
    let dataForkLength = try r.u64be(32, "data fork length")
    xmlOffset = try r.u64be(216, "XML offset")
    xmlLength = try r.u64be(224, "XML length")
    resourceForkOffset = try r.u64be(40, "resource fork offset")
    resourceForkLength = try r.u64be(48, "resource fork length")
    sectorCount = try r.u64be(492, "sector count")
    guard dataForkOffset <= offset, dataForkLength <= offset - dataForkOffset else {
      throw VDiskError.corrupt(
        path, at: offset + 24,
        "DMG data fork (\(hex(dataForkOffset)), \(dataForkLength) bytes) lies beyond the trailer at \(hex(offset))"
      )
    }
    if xmlLength > 0 {
      try Self.check(
        xmlOffset, xmlLength, name: "property list", field: 216, limit: offset, path: path)
    } else if resourceForkLength > 0 {
      try Self.check(
        resourceForkOffset, resourceForkLength, name: "resource fork", field: 40, limit: offset, path: path)
    } else {
      throw VDiskError.corrupt(
        path, at: offset + 216, "DMG trailer points at neither an XML property list nor a resource fork")
    }
    guard sectorCount <= Self.maxSectorCount else {
      throw VDiskError.corrupt(path, at: offset + 492, "DMG sector count \(sectorCount) is too large")
    }
  }

  /// Bounds the property list or the resource fork (`field`: the trailer offset of its place):
  /// at most `maxXMLLength` bytes, all before the trailer at `limit`.
  static func check(
    _ start: UInt64, _ length: UInt64, name: String, field: UInt64, limit: UInt64, path: String
  ) throws {
    guard length <= maxXMLLength else {
      throw VDiskError.corrupt(
        path, at: limit + field + 8,
        "DMG \(name) of \(length) bytes is larger than \(maxXMLLength >> 20) MiB")
    }
    guard start <= limit, length <= limit - start else {
      throw VDiskError.corrupt(
        path, at: limit + field,
        "DMG \(name) (\(hex(start)), \(length) bytes) lies beyond the trailer at \(hex(limit))")
    }
  }
}
