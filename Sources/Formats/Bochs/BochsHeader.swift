import VDiskCore

/// The header of a Bochs "growing" redolog image (512 bytes, little-endian; Bochs' redolog
/// format, as QEMU's block/bochs.c reads it): magic, type and subtype as NUL-terminated strings,
/// version, header size, the catalog's entry count, the bitmap and extent sizes, the disk size.
public struct BochsHeader: Sendable {
  /// "Bochs Virtual HD Image", NUL-terminated, in a 32-byte field.
  static let magic = Array("Bochs Virtual HD Image\0".utf8)
  static let redologType = "Redolog"
  static let growingSubtype = "Growing"
  /// Version 2 keeps a reserved word before the disk size; version 1 does not.
  static let version2: UInt32 = 0x0002_0000
  static let version1: UInt32 = 0x0001_0000
  static let size = 512
  /// QEMU's limit on catalog entries (1M: bximage's largest image, ~8 TB).
  static let maxCatalog: UInt32 = 0x10_0000
  /// QEMU's limits on the extent size: a power of two from 512 bytes to 8 MiB.
  static let extentSizes: ClosedRange<UInt32> = 512...0x80_0000
  /// The largest extent bitmap we accept (a bit per sector of the largest extent needs 2 KiB).
  static let maxBitmap: UInt32 = 1 << 20

  public var version: UInt32
  /// Where the catalog starts (the header's size).
  public var catalogOffset: UInt64
  public var catalogEntries: UInt32
  /// Bytes of bitmap before each extent's data (one bit per sector, least significant first).
  public var bitmapSize: UInt32
  public var extentSize: UInt32
  /// The disk size, rounded down to whole sectors (as QEMU counts it).
  public var virtualSize: UInt64

  /// Where extent slot 0 starts: right after the catalog.
  public var dataOffset: UInt64 { catalogOffset + UInt64(catalogEntries) * 4 }
  /// Bytes the bitmap takes in the file (whole sectors).
  public var bitmapBytes: UInt64 { (UInt64(bitmapSize) + 511) / 512 * 512 }
  /// Bytes one extent slot takes in the file: its bitmap sectors, then its data.
  public var slotSize: UInt64 { bitmapBytes + UInt64(extentSize) }
  public var sectorsPerExtent: UInt64 { UInt64(extentSize) / 512 }

  static func matches(_ head: [UInt8]) -> Bool {
    head.count >= magic.count && Array(head[0..<magic.count]) == magic
  }

  /// The NUL-terminated string in `field`.
  private static func text(_ field: ArraySlice<UInt8>) -> String {
    String(decoding: field.prefix { $0 != 0 }, as: UTF8.self)
  }

  public init(file: ImageFile) throws {
    let path = file.path
    guard file.size >= UInt64(Self.size) else {
      throw VDiskError.corrupt(path, "file of \(file.size) bytes is too small for a Bochs header")
    }
    let r = ByteReader(try file.readBytes(at: 0, count: Self.size, what: "Bochs header"), path: path)
    guard Array(try r.bytes(0, count: Self.magic.count, "magic")) == Self.magic else {
      throw VDiskError.corrupt(path, at: 0, "no Bochs magic \"Bochs Virtual HD Image\"")
    }
    let type = Self.text(try r.bytes(32, count: 16, "type"))
    let subtype = Self.text(try r.bytes(48, count: 16, "subtype"))
    guard type == Self.redologType, subtype == Self.growingSubtype else {
      throw VDiskError.unsupported(
        path, "Bochs \(type) \(subtype) images are not supported (only Redolog Growing)")
    }
    version = try r.u32le(64, "version")
    guard version == Self.version1 || version == Self.version2 else {
      throw VDiskError.unsupported(
        path, "Bochs version \(hex(UInt64(version))) is not supported (only 1 and 2)")
    }
    catalogOffset = UInt64(try r.u32le(68, "header size"))
    catalogEntries = try r.u32le(72, "catalog entries")
    bitmapSize = try r.u32le(76, "bitmap size")
    extentSize = try r.u32le(80, "extent size")
    let disk = try r.u64le(version == Self.version1 ? 84 : 88, "disk size")
    virtualSize = disk / 512 * 512

    guard catalogEntries <= Self.maxCatalog else {
      throw VDiskError.corrupt(
        path, at: 72, "Bochs catalog of \(catalogEntries) entries exceeds the limit of \(Self.maxCatalog)")
    }
    guard Self.extentSizes.contains(extentSize), extentSize & (extentSize - 1) == 0 else {
      throw VDiskError.corrupt(
        path, at: 80, "Bochs extent size \(extentSize) is not a power of two between 512 bytes and 8 MiB")
    }
    guard bitmapSize <= Self.maxBitmap, UInt64(bitmapSize) * 8 >= sectorsPerExtent else {
      throw VDiskError.corrupt(
        path, at: 76,
        "Bochs bitmap of \(bitmapSize) bytes does not fit an extent of \(sectorsPerExtent) sectors")
    }
    let extents = virtualSize / UInt64(extentSize) + (virtualSize % UInt64(extentSize) == 0 ? 0 : 1)
    guard UInt64(catalogEntries) >= extents else {
      throw VDiskError.corrupt(
        path, at: 72,
        "Bochs catalog of \(catalogEntries) entries is too small for a disk of \(disk) bytes (\(extents) extents)"
      )
    }
    guard dataOffset <= file.size else {
      throw VDiskError.corrupt(
        path, at: catalogOffset,
        "Bochs catalog of \(catalogEntries) entries at \(hex(catalogOffset)) runs past end of file (size \(hex(file.size)))"
      )
    }
  }
}
