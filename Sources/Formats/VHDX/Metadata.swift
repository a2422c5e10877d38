import VDiskCore

/// The metadata region's table and the system items it points at (vhdx-notes, "Metadata region";
/// MS-VHDX 2.6). The table has no checksum; every offset and length is checked against the region.
public struct VHDXMetadata: Sendable {
  static let tableSize = 64 << 10
  /// "metadata" as a little-endian u64.
  static let signature: UInt64 = 0x6174_6164_6174_656D
  static let maxEntries = 2047
  static let maxItemLength: UInt64 = 1 << 20

  static let fileParameters = GUID(
    0xCAA1_6737, 0xFA36, 0x4D43, [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B])
  static let virtualDiskSize = GUID(
    0x2FA5_4224, 0xCD1B, 0x4876, [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8])
  static let page83Data = GUID(0xBECA_12AB, 0xB2E6, 0x4523, [0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46])
  static let logicalSectorSize = GUID(
    0x8141_BF1D, 0xA96F, 0x4709, [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F])
  static let physicalSectorSize = GUID(
    0xCDA3_48C7, 0x445D, 0x4471, [0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56])
  static let parentLocatorItem = GUID(
    0xA8D3_5F2D, 0xB30B, 0x454D, [0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C])

  /// The largest virtual disk the format allows (vhdx-notes, "Virtual Disk Size": 64 TiB).
  static let maxVirtualSize: UInt64 = 64 << 40

  /// Payload block size: a power of two from 1 MiB to 256 MiB.
  public var blockSize: UInt64
  /// LeaveBlockAllocated (bit 0 of File Parameters flags): a fixed disk.
  public var leaveBlocksAllocated: Bool
  /// HasParent (bit 1): a differencing disk.
  public var hasParent: Bool
  public var virtualSize: UInt64
  /// 512 or 4096.
  public var logicalSectorSize: UInt64
  /// 512 or 4096.
  public var physicalSectorSize: UInt64
  /// Virtual Disk ID (SCSI page 83 data).
  public var page83: GUID
  public var parentLocator: ParentLocator?

  init(_ source: ReplayedFile, region: RegionTable.Region) throws {
    let path = source.file.path
    let table = try source.readBytes(at: region.offset, count: Self.tableSize, what: "metadata table")
    let r = ByteReader(table, path: path, baseOffset: region.offset)
    guard try r.u64le(0) == Self.signature else {
      throw VDiskError.corrupt(path, at: region.offset, "metadata table lacks the \"metadata\" signature")
    }
    let count = Int(try r.u16le(10))
    guard count <= Self.maxEntries else {
      throw VDiskError.corrupt(
        path, at: region.offset + 10, "metadata table claims \(count) entries; at most 2047")
    }
    var items: [GUID: [UInt8]] = [:]
    for i in 0..<count {
      let at = 32 + 32 * i
      let entryOffset = region.offset + UInt64(at)
      let id = GUID(onDisk: try r.bytes(at, count: 16))
      let offset = UInt64(try r.u32le(at + 16))
      let length = UInt64(try r.u32le(at + 20))
      let required = try r.u32le(at + 24) & 4 != 0
      let known = [
        Self.fileParameters, Self.virtualDiskSize, Self.page83Data, Self.logicalSectorSize,
        Self.physicalSectorSize,
        Self.parentLocatorItem,
      ].contains(id)
      guard known else {
        if required {
          throw VDiskError.unsupported(path, "the image requires the unknown metadata item {\(id)}")
        }
        continue
      }
      guard items[id] == nil else {
        throw VDiskError.corrupt(path, at: entryOffset, "metadata item {\(id)} is listed twice")
      }
      // MS-VHDX 2.6.1.2: items lie after the 64 KiB table, within the region, at most 1 MiB.
      guard length <= Self.maxItemLength, length == 0 || offset >= UInt64(Self.tableSize),
        offset + length <= region.length
      else {
        throw VDiskError.corrupt(
          path, at: entryOffset,
          "metadata item {\(id)} at \(hex(offset)) (length \(length)) lies outside the metadata region (length \(hex(region.length)))"
        )
      }
      items[id] = try source.readBytes(
        at: region.offset + offset, count: Int(length), what: "metadata item {\(id)}")
    }

    func item(_ id: GUID, _ name: String, minimum: Int) throws -> ByteReader {
      guard let bytes = items[id] else {
        throw VDiskError.corrupt(path, at: region.offset, "metadata lacks the required \(name) item")
      }
      guard bytes.count >= minimum else {
        throw VDiskError.corrupt(
          path, at: region.offset, "metadata item \(name) is \(bytes.count) bytes; too short")
      }
      return ByteReader(bytes, path: path, baseOffset: region.offset)
    }
    let parameters = try item(Self.fileParameters, "File Parameters", minimum: 8)
    blockSize = UInt64(try parameters.u32le(0))
    let flags = try parameters.u32le(4)
    leaveBlocksAllocated = flags & 1 != 0
    hasParent = flags & 2 != 0
    virtualSize = try item(Self.virtualDiskSize, "Virtual Disk Size", minimum: 8).u64le(0)
    page83 = GUID(onDisk: try item(Self.page83Data, "Page 83 Data", minimum: 16).bytes(0, count: 16))
    logicalSectorSize = UInt64(try item(Self.logicalSectorSize, "Logical Sector Size", minimum: 4).u32le(0))
    physicalSectorSize = UInt64(
      try item(Self.physicalSectorSize, "Physical Sector Size", minimum: 4).u32le(0))

    guard blockSize >= 1 << 20, blockSize <= 256 << 20, blockSize & (blockSize - 1) == 0 else {
      throw VDiskError.corrupt(
        path, at: region.offset, "block size \(blockSize) is not a power of two from 1 MiB to 256 MiB")
    }
    guard logicalSectorSize == 512 || logicalSectorSize == 4096 else {
      throw VDiskError.corrupt(
        path, at: region.offset, "logical sector size \(logicalSectorSize) is not 512 or 4096")
    }
    guard physicalSectorSize == 512 || physicalSectorSize == 4096 else {
      throw VDiskError.corrupt(
        path, at: region.offset, "physical sector size \(physicalSectorSize) is not 512 or 4096")
    }
    guard virtualSize % logicalSectorSize == 0, virtualSize <= Self.maxVirtualSize else {
      throw VDiskError.corrupt(
        path, at: region.offset,
        "virtual disk size \(virtualSize) is not a multiple of the \(logicalSectorSize)-byte sector or exceeds 64 TiB"
      )
    }
    if hasParent {
      guard let locator = items[Self.parentLocatorItem] else {
        throw VDiskError.corrupt(
          path, at: region.offset, "differencing disk (HasParent) lacks a parent locator")
      }
      parentLocator = try ParentLocator(locator, path: path)
    }
  }
}
