import VDiskCore

/// The header of a Parallels expandable image (QEMU docs/interop/parallels.txt, "Header"; all
/// fields little-endian), validated against the file.
public struct ParallelsHeader: Sendable {
  /// parallels.txt, "magic": the original signature, whose BAT counts sectors.
  static let magicSectors = Array("WithoutFreeSpace".utf8)
  /// parallels.txt, "magic": the Format Extension signature, whose BAT counts clusters.
  static let magicClusters = Array("WithouFreSpacExt".utf8)
  /// parallels.txt, "version": must be 2.
  static let version: UInt32 = 2
  /// The header's size; the BAT follows it (parallels.txt, "BAT").
  static let size = 64
  /// parallels.txt, "in_use": set while the image is open read-write.
  static let inUseMagic: UInt32 = 0x746F_6E59
  /// parallels.txt, "in_use": the value of an image closed by Parallels (QEMU writes 0).
  static let closedMagic: UInt32 = 0x312E_3276
  /// QEMU's limit on the cluster size in sectors (INT32_MAX / 513): a cluster below 2 GiB.
  static let maxClusterSectors: UInt32 = 0x7FFF_FFFF / 513
  /// QEMU's limit on BAT entries ("Catalog too large": a BAT below INT_MAX bytes).
  static let maxBATEntries: UInt32 = 0x7FFF_FFFF / 4
  /// The largest guest disk we open (64 PiB, as for VMDK).
  static let maxVirtualSize: UInt64 = 1 << 56

  /// Which signature the file carries; it says the unit of BAT entries.
  public enum Signature: Sendable {
    /// "WithoutFreeSpace": BAT entries are sector numbers; only the low 32 bits of nb_sectors.
    case sectors
    /// "WithouFreSpacExt": BAT entries are cluster numbers.
    case clusters

    var text: String { self == .sectors ? "WithoutFreeSpace" : "WithouFreSpacExt" }
  }

  public var signature: Signature
  /// Sectors per cluster ("tracks").
  public var clusterSectors: UInt32
  public var batEntries: UInt32
  /// nb_sectors × 512.
  public var virtualSize: UInt64
  public var inUse: UInt32
  /// Where the data area starts, in bytes (data_off, or the BAT's end rounded up to a sector).
  public var dataOffset: UInt64
  public var flags: UInt32
  /// Format Extension offset in sectors (0: none).
  public var extensionOffset: UInt64
  public var heads: UInt32
  public var cylinders: UInt32

  public var clusterSize: UInt64 { UInt64(clusterSectors) * 512 }
  /// Where the BAT ends in the file.
  public var batEnd: UInt64 { UInt64(Self.size) + UInt64(batEntries) * 4 }
  /// Sectors one BAT unit stands for (parallels.txt, "BAT": sectors or clusters).
  public var entryUnit: UInt64 { signature == .sectors ? 1 : UInt64(clusterSectors) }
  /// Whether the image was left open read-write (parallels.txt, "in_use").
  public var isDirty: Bool { inUse == Self.inUseMagic }

  /// Whether `head` starts with either signature. (QEMU's probe also wants version 2; another
  /// version is refused by name rather than shown as raw bytes.)
  static func matches(_ head: [UInt8]) -> Bool {
    guard head.count >= size else { return false }
    let magic = Array(head[0..<16])
    return magic == magicSectors || magic == magicClusters
  }

  public init(file: ImageFile) throws {
    let path = file.path
    guard file.size >= UInt64(Self.size) else {
      throw VDiskError.corrupt(path, "file of \(file.size) bytes is too small for a Parallels header")
    }
    let r = ByteReader(try file.readBytes(at: 0, count: Self.size, what: "Parallels header"), path: path)
    let magic = Array(try r.bytes(0, count: 16, "signature"))
    switch magic {
    case Self.magicSectors: signature = .sectors
    case Self.magicClusters: signature = .clusters
    default:
      throw VDiskError.corrupt(path, at: 0, "no Parallels signature (WithoutFreeSpace or WithouFreSpacExt)")
    }
    let version = try r.u32le(16, "version")
    guard version == Self.version else {
      throw VDiskError.unsupported(path, "Parallels version \(version) is not supported (only 2)")
    }
    heads = try r.u32le(20, "heads")
    cylinders = try r.u32le(24, "cylinders")
    clusterSectors = try r.u32le(28, "cluster size")
    batEntries = try r.u32le(32, "BAT entries")
    var sectors = try r.u64le(36, "sector count")
    // parallels.txt, "nb_sectors": only the low 4 bytes count for WithoutFreeSpace images.
    if signature == .sectors { sectors &= 0xFFFF_FFFF }
    inUse = try r.u32le(44, "in_use")
    let dataSectors = try r.u32le(48, "data offset")
    flags = try r.u32le(52, "flags")
    extensionOffset = try r.u64le(56, "extension offset")

    guard clusterSectors > 0, clusterSectors <= Self.maxClusterSectors else {
      throw VDiskError.corrupt(
        path, at: 28,
        "Parallels cluster size of \(clusterSectors) sectors is not between 1 and \(Self.maxClusterSectors)")
    }
    guard batEntries <= Self.maxBATEntries else {
      throw VDiskError.corrupt(
        path, at: 32, "Parallels BAT of \(batEntries) entries exceeds the limit of \(Self.maxBATEntries)")
    }
    guard sectors <= Self.maxVirtualSize / 512 else {
      throw VDiskError.corrupt(path, at: 36, "Parallels disk size of \(sectors) sectors exceeds 64 PiB")
    }
    virtualSize = sectors * 512
    let batEnd = UInt64(Self.size) + UInt64(batEntries) * 4
    guard batEnd <= file.size else {
      throw VDiskError.corrupt(
        path, at: UInt64(Self.size),
        "Parallels BAT of \(batEntries) entries runs past end of file (ends at \(hex(batEnd)), file size \(hex(file.size)))"
      )
    }
    // parallels.txt, "data_off": zero means the end of the BAT rounded up to a sector.
    dataOffset = dataSectors == 0 ? (batEnd + 511) / 512 * 512 : UInt64(dataSectors) * 512
  }
}
