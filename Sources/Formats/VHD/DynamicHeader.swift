import VDiskCore

/// The 1024-byte dynamic disk header of dynamic and differencing disks (vhd.asciidoc, "Dynamic
/// disk header"; big-endian), found at the footer's data offset.
public struct VHDDynamicHeader: Sendable {
  static let size = 1024
  static let cookie = Array("cxsparse".utf8)
  static let checksumField = 36..<40
  /// Block sizes we accept: a power of two (vhd.asciidoc: "a power-of-two multitude of the sector
  /// size"), from one sector to 256 MiB (the default is 2 MiB).
  static let blockSizeRange: ClosedRange<UInt32> = 512...(256 << 20)
  static let locatorCount = 8

  public var tableOffset: UInt64
  public var maxTableEntries: UInt32
  public var blockSize: UInt32
  /// The unique id of the parent's footer (differencing disks).
  public var parentUUID: GUID
  /// UTF-16BE parent name (differencing disks), for messages and as a last-resort locator.
  public var parentName: String
  public var locators: [VHDParentLocator]

  /// Reads and checks the header at `offset` (cookie, checksum, block size).
  init(file: ImageFile, at offset: UInt64) throws {
    let path = file.path
    guard offset <= file.size, UInt64(Self.size) <= file.size - offset else {
      throw VDiskError.corrupt(
        path, at: offset,
        "dynamic disk header at \(hex(offset)) lies beyond end of file (size \(hex(file.size)))")
    }
    let bytes = try file.readBytes(at: offset, count: Self.size, what: "dynamic disk header")
    guard Array(bytes[0..<8]) == Self.cookie else {
      throw VDiskError.corrupt(
        path, at: offset, "no dynamic disk header (cookie \"cxsparse\") at \(hex(offset))")
    }
    let r = ByteReader(bytes, path: path, baseOffset: offset)
    let stored = try r.u32be(36, "dynamic header checksum")
    let computed = vhdChecksum(bytes, skipping: Self.checksumField)
    guard stored == computed else {
      throw VDiskError.corrupt(
        path, at: offset,
        "dynamic disk header at \(hex(offset)) has checksum \(hex(UInt64(stored))), expected \(hex(UInt64(computed)))"
      )
    }
    tableOffset = try r.u64be(16, "BAT offset")
    maxTableEntries = try r.u32be(28, "max table entries")
    blockSize = try r.u32be(32, "block size")
    guard Self.blockSizeRange.contains(blockSize), blockSize & (blockSize - 1) == 0 else {
      throw VDiskError.corrupt(
        path, at: offset + 32,
        "block size \(blockSize) is not a power of two between 512 bytes and 256 MiB")
    }
    parentUUID = GUID(onDisk: try r.bytes(40, count: 16, "parent unique id"), layout: .bigEndian)
    parentName = String(utf16: try r.bytes(64, count: 512, "parent name"), order: .bigEndian)
    var locators: [VHDParentLocator] = []
    for i in 0..<Self.locatorCount {
      let entry = try VHDParentLocator(r, at: 576 + 24 * i)
      if entry.platformCode != 0 { locators.append(entry) }
    }
    self.locators = locators
  }

  /// Bytes of the sector bitmap before each block's data: one bit per sector, padded to whole
  /// sectors (vhd.asciidoc, "Data blocks").
  var bitmapSize: UInt64 { (UInt64(blockSize) / (512 * 8) + 511) / 512 * 512 }
}
