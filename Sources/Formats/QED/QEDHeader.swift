import VDiskCore

/// The QED header (qed_spec.txt, "Header"; all fields little-endian), validated against the file.
public struct QEDHeader: Sendable {
  /// qed_spec.txt: magic "QED\0".
  static let magic: [UInt8] = [0x51, 0x45, 0x44, 0x00]
  /// Bytes of the fixed header fields (the backing file name usually follows them).
  static let fixedSize = 64
  /// qed_spec.txt: cluster_size is a power of 2 in [2^12, 2^26].
  static let clusterSizeRange: ClosedRange<UInt32> = (1 << 12)...(1 << 26)
  /// qed_spec.txt: table_size (in clusters) is a power of 2 in [1, 16].
  static let tableSizeRange: ClosedRange<UInt32> = 1...16
  /// The most bytes before the first regular cluster we read (header_size clusters); QEMU's
  /// images use one cluster.
  static let maxHeaderBytes: UInt64 = 64 << 20
  /// The largest disk we open: QEMU's block layer limit (INT64_MAX), in whole sectors.
  static let maxImageSize = UInt64(Int64.max) / 512 * 512
  /// Backing file names longer than this are refused (QEMU's limit for a file name, 1023 bytes).
  static let maxNameLength: UInt32 = 1023

  /// Feature bits (qed_spec.txt, "Feature bits").
  public struct Features: OptionSet, Sendable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    /// QED_F_BACKING_FILE: the image uses a backing file.
    public static let backingFile = Features(rawValue: 0x01)
    /// QED_F_NEED_CHECK: the image needs a consistency check before use.
    public static let needCheck = Features(rawValue: 0x02)
    /// QED_F_BACKING_FORMAT_NO_PROBE: the backing file is raw; never probe it.
    public static let backingFormatNoProbe = Features(rawValue: 0x04)
    static let known: Features = [.backingFile, .needCheck, .backingFormatNoProbe]
  }

  /// Where the fields a writer changes live in the header.
  static let featuresOffset: UInt64 = 16
  static let autoclearOffset: UInt64 = 32
  static let imageSizeOffset: UInt64 = 48

  public var clusterSize: UInt32
  /// Clusters per L1 or L2 table.
  public var tableSize: UInt32
  /// Clusters before the first regular cluster.
  public var headerClusters: UInt32
  public var features: Features
  public var compatFeatures: UInt64
  public var autoclearFeatures: UInt64
  public var l1Offset: UInt64
  public var imageSize: UInt64
  public var backingFileName: String?

  var clusterBits: UInt64 { UInt64(clusterSize.trailingZeroBitCount) }
  /// Bytes of one L1 or L2 table.
  var tableBytes: UInt64 { UInt64(tableSize) * UInt64(clusterSize) }
  /// qed_spec.txt: TABLE_NOFFSETS = table_size * cluster_size / sizeof(uint64_t).
  var tableEntries: UInt64 { tableBytes / 8 }
  /// Guest bytes one L2 table maps.
  var l2Coverage: UInt64 { tableEntries * UInt64(clusterSize) }
  /// L1 entries the disk uses (the rest of the L1 table is never read).
  var l1EntriesNeeded: UInt64 { l1Entries(for: imageSize) }
  /// Where regular clusters start.
  var headerBytes: UInt64 { UInt64(headerClusters) * UInt64(clusterSize) }
  /// The backing file's format as the header says it: raw with QED_F_BACKING_FORMAT_NO_PROBE,
  /// else probed.
  public var backingFormat: String? {
    features.contains(.backingFile) && features.contains(.backingFormatNoProbe) ? "raw" : nil
  }

  public static func hasMagic(_ bytes: some Collection<UInt8>) -> Bool {
    bytes.prefix(4).elementsEqual(magic)
  }

  public init(file: ImageFile) throws {
    let path = file.path
    guard file.size >= UInt64(Self.fixedSize) else {
      throw VDiskError.corrupt(path, "file of \(file.size) bytes is too small for a QED header")
    }
    let r = ByteReader(try file.readBytes(at: 0, count: Self.fixedSize, what: "QED header"), path: path)
    guard Self.hasMagic(try r.bytes(0, count: 4, "magic")) else {
      throw VDiskError.corrupt(path, at: 0, "no QED magic \"QED\\0\" at offset 0")
    }
    clusterSize = try r.u32le(4, "cluster size")
    tableSize = try r.u32le(8, "table size")
    headerClusters = try r.u32le(12, "header size")
    features = Features(rawValue: try r.u64le(16, "features"))
    compatFeatures = try r.u64le(24, "compat features")
    autoclearFeatures = try r.u64le(32, "autoclear features")
    l1Offset = try r.u64le(40, "L1 table offset")
    imageSize = try r.u64le(48, "image size")
    let nameOffset = try r.u32le(56, "backing file name offset")
    let nameSize = try r.u32le(60, "backing file name size")
    try validate(path: path, fileSize: file.size)
    backingFileName = nil
    if features.contains(.backingFile) {
      backingFileName = try Self.backingName(
        file, offset: nameOffset, size: nameSize, headerBytes: headerBytes)
    }
  }

  /// Bounds every size and offset (qed_spec.txt, "Field descriptions" and "Tables"; QEMU's open
  /// checks; the file size).
  private func validate(path: String, fileSize: UInt64) throws {
    func corrupt(_ offset: UInt64, _ detail: String) -> VDiskError {
      VDiskError.corrupt(path, at: offset, detail)
    }
    guard Self.clusterSizeRange.contains(clusterSize), clusterSize.nonzeroBitCount == 1 else {
      throw corrupt(4, "QED cluster size \(clusterSize) is not a power of two between 4 KiB and 64 MiB")
    }
    guard Self.tableSizeRange.contains(tableSize), tableSize.nonzeroBitCount == 1 else {
      throw corrupt(8, "QED table size \(tableSize) is not a power of two between 1 and 16 clusters")
    }
    let unknown = features.subtracting(Features.known).rawValue
    guard unknown == 0 else {
      throw VDiskError.unsupported(path, "QED feature bits \(hex(unknown)) are not supported")
    }
    guard headerClusters >= 1, UInt64(headerClusters) * UInt64(clusterSize) <= Self.maxHeaderBytes else {
      throw corrupt(12, "QED header size of \(headerClusters) clusters is not between 1 cluster and 64 MiB")
    }
    guard isValidSize(imageSize) else {
      throw corrupt(48, "QED image size \(imageSize) \(sizeRule)")
    }
    // qed_spec.txt: the L1 table is cluster-aligned; it lies after the header and in the file.
    let (l1End, o3) = l1Offset.addingReportingOverflow(tableBytes)
    guard l1Offset % UInt64(clusterSize) == 0, l1Offset >= headerBytes, !o3, l1End <= fileSize else {
      throw corrupt(
        40,
        "QED L1 table at \(hex(l1Offset)) (\(tableBytes) bytes) is not cluster-aligned or lies outside the file (regular clusters from \(hex(headerBytes)), file size \(hex(fileSize)))"
      )
    }
  }

  /// qed_spec.txt: image_size is a multiple of 512 and at most TABLE_NOFFSETS² clusters (and,
  /// here, at most 2^63 bytes).
  func isValidSize(_ size: UInt64) -> Bool {
    let (square, o1) = tableEntries.multipliedReportingOverflow(by: tableEntries)
    let (maxSize, o2) = square.multipliedReportingOverflow(by: UInt64(clusterSize))
    return size % 512 == 0 && size <= Self.maxImageSize && (o1 || o2 || size <= maxSize)
  }

  /// What `isValidSize` demands, for messages.
  var sizeRule: String {
    let (square, o1) = tableEntries.multipliedReportingOverflow(by: tableEntries)
    let (maxSize, o2) = square.multipliedReportingOverflow(by: UInt64(clusterSize))
    return
      "is not a multiple of 512 or exceeds what the tables map (\(o1 || o2 ? "2^64" : String(maxSize)) bytes) or 2^63 bytes"
  }

  /// L1 entries a disk of `size` bytes uses.
  func l1Entries(for size: UInt64) -> UInt64 { size / l2Coverage + (size % l2Coverage == 0 ? 0 : 1) }

  /// The backing file name (qed_spec.txt: stored within the first header_size clusters, not
  /// NUL-terminated).
  private static func backingName(_ file: ImageFile, offset: UInt32, size: UInt32, headerBytes: UInt64) throws
    -> String
  {
    let end = UInt64(offset) + UInt64(size)
    guard size > 0, size <= maxNameLength, offset >= UInt32(fixedSize), end <= headerBytes, end <= file.size
    else {
      throw VDiskError.corrupt(
        file.path, at: 56,
        "QED backing file name at \(hex(UInt64(offset))) (\(size) bytes) lies outside the header (\(fixedSize) to \(hex(headerBytes))) or is empty or longer than \(maxNameLength) bytes"
      )
    }
    let bytes = try file.readBytes(at: UInt64(offset), count: Int(size), what: "QED backing file name")
    guard !bytes.contains(0) else {
      throw VDiskError.corrupt(file.path, at: UInt64(offset), "QED backing file name contains a NUL byte")
    }
    return String(decoding: bytes, as: UTF8.self)
  }
}
