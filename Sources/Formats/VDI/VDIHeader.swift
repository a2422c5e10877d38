import VDiskCore

/// The VDI pre-header and header, v1.1 or legacy v0 (vdi.md, "Pre-header", "Header v1.1",
/// "Legacy header v0"; all fields little-endian), validated against the file.
public struct VDIHeader: Sendable {
  /// vdi.md: signature 0xBEDA107F at 0x40.
  static let signature: UInt32 = 0xBEDA_107F
  static let version11: UInt32 = 0x0001_0001
  static let version0: UInt32 = 0
  /// vdi.md, "Header v1.1": 0x180 plain, 0x190 with LCHS geometry.
  static let minimumV1HeaderSize: UInt32 = 0x180
  /// Bytes read for parsing: pre-header and the largest header we know, within the first sector.
  static let readSize = 512
  /// Block sizes we accept: a power of two from 512 bytes to 256 MiB (qemu only makes 1 MiB).
  static let blockSizeRange: ClosedRange<UInt32> = 512...(256 << 20)
  /// qemu's limit on block-map entries (a map of at most INT_MAX bytes).
  static let maxBlocks: UInt32 = 1 << 29
  /// The most per-block prefix bytes (cbBlockExtra) we accept.
  static let maxBlockExtra: UInt32 = 1 << 20

  /// vdi.md, "u32Type".
  public enum ImageType: UInt32, Sendable {
    case normal = 1
    case fixed = 2
    case undo = 3
    case diff = 4

    /// As `qemu-img create -o static=…` names it.
    var name: String {
      switch self {
      case .normal: "dynamic"
      case .fixed: "static"
      case .undo: "undo"
      case .diff: "diff"
      }
    }
  }

  public var version: UInt32
  public var imageType: ImageType
  /// Byte offset of the block map (offBlocks).
  public var blockMapOffset: UInt64
  /// Byte offset of block slot 0 (offData).
  public var dataOffset: UInt64
  /// cbDisk, rounded up to whole sectors as qemu does.
  public var virtualSize: UInt64
  public var blockSize: UInt32
  public var blockExtra: UInt32
  public var blockCount: UInt32
  public var blocksAllocated: UInt32
  public var uuid: GUID
  public var comment: String

  public init(file: ImageFile) throws {
    let path = file.path
    guard file.size >= 0x48 else {
      throw VDiskError.corrupt(path, "file of \(file.size) bytes is too small for a VDI header")
    }
    var bytes = [UInt8](repeating: 0, count: Self.readSize)
    _ = try bytes.withUnsafeMutableBytes { try file.read(into: $0, at: 0) }
    let r = ByteReader(bytes, path: path)
    guard try r.u32le(0x40, "signature") == Self.signature else {
      throw VDiskError.corrupt(path, at: 0x40, "no VDI signature 0xbeda107f at 0x40")
    }
    version = try r.u32le(0x44, "version")
    let typeField: Int
    let headerEnd: UInt64
    switch version {
    case Self.version11:
      let size = try r.u32le(0x48, "header size")
      guard size >= Self.minimumV1HeaderSize, size <= UInt32(Self.readSize - 0x48) else {
        throw VDiskError.corrupt(path, at: 0x48, "VDI header size \(size) is not between 384 and 440")
      }
      typeField = 0x4C
      headerEnd = 0x48 + UInt64(size)
      blockMapOffset = UInt64(try r.u32le(0x154, "block map offset"))
      dataOffset = UInt64(try r.u32le(0x158, "data offset"))
      let sectorSize = try r.u32le(0x168, "sector size")
      guard sectorSize == 512 || sectorSize == 0 else {
        throw VDiskError.unsupported(path, "VDI sector size \(sectorSize) is not 512")
      }
      virtualSize = try r.u64le(0x170, "disk size")
      blockSize = try r.u32le(0x178, "block size")
      blockExtra = try r.u32le(0x17C, "block extra")
      blockCount = try r.u32le(0x180, "block count")
      blocksAllocated = try r.u32le(0x184, "allocated blocks")
      uuid = GUID(onDisk: try r.bytes(0x188, count: 16, "image uuid"))
      comment = String(decoding: try r.bytes(0x54, count: 256, "comment").prefix { $0 != 0 }, as: UTF8.self)
    case Self.version0:
      // vdi.md, "Legacy header v0": the map follows the header, the data follows the map.
      typeField = 0x48
      headerEnd = 0x1A4
      virtualSize = try r.u64le(0x160, "disk size")
      blockSize = try r.u32le(0x168, "block size")
      blockExtra = 0
      blockCount = try r.u32le(0x16C, "block count")
      blocksAllocated = try r.u32le(0x170, "allocated blocks")
      uuid = GUID(onDisk: try r.bytes(0x174, count: 16, "image uuid"))
      comment = String(decoding: try r.bytes(0x50, count: 256, "comment").prefix { $0 != 0 }, as: UTF8.self)
      blockMapOffset = headerEnd
      dataOffset = headerEnd + UInt64(blockCount) * 4
    default:
      throw VDiskError.unsupported(
        path, "VDI version \(version >> 16).\(version & 0xFFFF) is not supported (only 1.1 and 0.0)")
    }
    let type = try r.u32le(typeField, "image type")
    guard let known = ImageType(rawValue: type) else {
      throw VDiskError.corrupt(path, at: UInt64(typeField), "unknown VDI image type \(type)")
    }
    guard known == .normal || known == .fixed else {
      // vdi.md, "Image types": the parent of a differencing image is named only in VirtualBox's
      // media registry, not in the file.
      throw VDiskError.unsupported(path, "VDI \(known.name) images (differencing) are not supported")
    }
    imageType = known
    try validate(path: path, fileSize: file.size, headerEnd: headerEnd)
  }

  /// Bounds every size and offset the header gives (vdi.md: qemu's open checks, plus the file).
  private mutating func validate(path: String, fileSize: UInt64, headerEnd: UInt64) throws {
    guard Self.blockSizeRange.contains(blockSize), blockSize & (blockSize - 1) == 0 else {
      throw VDiskError.corrupt(
        path, "VDI block size \(blockSize) is not a power of two between 512 bytes and 256 MiB")
    }
    guard blockExtra <= Self.maxBlockExtra else {
      throw VDiskError.corrupt(path, "VDI block extra \(blockExtra) is larger than \(Self.maxBlockExtra)")
    }
    guard blockCount <= Self.maxBlocks else {
      throw VDiskError.corrupt(path, "VDI block count \(blockCount) exceeds the limit of \(Self.maxBlocks)")
    }
    // Sizes not a multiple of 512 (VBoxManage convertfromraw) are rounded up, as qemu does.
    let (rounded, overflow) = virtualSize.addingReportingOverflow(511)
    guard !overflow, virtualSize <= UInt64(blockCount) * UInt64(blockSize) else {
      throw VDiskError.corrupt(
        path, "VDI disk size \(virtualSize) exceeds its \(blockCount) blocks of \(blockSize) bytes")
    }
    virtualSize = rounded / 512 * 512
    let mapEnd = blockMapOffset + UInt64(blockCount) * 4
    guard blockMapOffset >= headerEnd, mapEnd <= fileSize else {
      throw VDiskError.corrupt(
        path, at: blockMapOffset,
        "VDI block map of \(blockCount) entries at \(hex(blockMapOffset)) lies outside the file (header ends at \(hex(headerEnd)), file size \(hex(fileSize)))"
      )
    }
    guard dataOffset >= mapEnd, dataOffset <= fileSize else {
      throw VDiskError.corrupt(
        path, at: dataOffset,
        "VDI data offset \(hex(dataOffset)) lies before the end of the block map (\(hex(mapEnd))) or past end of file (size \(hex(fileSize)))"
      )
    }
  }

  /// Bytes one data slot takes in the file (vdi.md, "Block map": cbBlockExtra + cbBlock).
  var slotSize: UInt64 { UInt64(blockExtra) + UInt64(blockSize) }
}
