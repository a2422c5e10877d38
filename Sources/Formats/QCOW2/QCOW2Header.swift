import VDiskCore

/// The qcow2 header and its extensions, decoded and validated in one place (qcow2 spec, "Header",
/// "Header extensions"). Everything else in the driver sees these checked Swift values only.
public struct QCOW2Header: Sendable {
  /// "QFI\xfb"
  public static let magic: [UInt8] = [0x51, 0x46, 0x49, 0xFB]

  public static func hasMagic(_ first4: some Collection<UInt8>) -> Bool {
    first4.count >= 4 && zip(first4, magic).allSatisfy { $0 == $1 }
  }

  /// Incompatible feature bits this driver understands (qcow2 spec, "Header", bits 0–4).
  public static let knownIncompatibleFeatures: UInt64 = 0x1F
  static let incompatibleDirty: UInt64 = 1 << 0
  static let incompatibleCorrupt: UInt64 = 1 << 1
  static let incompatibleDataFile: UInt64 = 1 << 2
  static let incompatibleCompressionType: UInt64 = 1 << 3
  static let incompatibleExtendedL2: UInt64 = 1 << 4
  static let compatibleLazyRefcounts: UInt64 = 1 << 0
  static let autoclearBitmaps: UInt64 = 1 << 0
  static let autoclearDataFileRaw: UInt64 = 1 << 1

  /// Hard limits (QEMU's, or tighter where reading needs less).
  static let maxL1Bytes: UInt64 = 64 << 20
  static let maxNameLength = 1023
  static let maxSnapshots: UInt32 = 65536

  public var version: UInt32
  public var clusterBits: UInt32
  public var clusterSize: UInt64
  public var virtualSize: UInt64
  /// 0 none, 1 AES, 2 LUKS (both refused at open).
  public var cryptMethod: UInt32
  /// Entries of the active L1 table as the header records them.
  public var l1Size: UInt32
  public var l1TableOffset: UInt64
  public var refcountTableOffset: UInt64
  public var refcountTableClusters: UInt32
  public var snapshotCount: UInt32
  public var snapshotsOffset: UInt64
  public var incompatibleFeatures: UInt64
  public var compatibleFeatures: UInt64
  public var autoclearFeatures: UInt64
  public var refcountOrder: UInt32
  public var headerLength: UInt32
  /// 0 deflate ("zlib"), 1 zstd.
  public var compressionType: UInt8
  public var backingFileName: String?
  public var backingFormat: String?
  public var externalDataFileName: String?
  /// Autoclear bit 1 with an external data file: the data file is a consistent raw image.
  public var dataFileIsRaw: Bool
  /// The feature name table extension (0x6803f857), when present.
  public var featureNames: QCOW2FeatureNames

  /// L1 entries the virtual size needs: ceil(ceil(size / cluster) / l2Entries).
  public var l1EntriesNeeded: UInt64
  /// Bytes of L2 tables needed to cover the whole virtual size (for the cache budget).
  public var l2CoverageBytes: UInt64

  public var isDirty: Bool { incompatibleFeatures & Self.incompatibleDirty != 0 }
  public var isCorrupt: Bool { incompatibleFeatures & Self.incompatibleCorrupt != 0 }
  public var hasExternalDataFile: Bool { incompatibleFeatures & Self.incompatibleDataFile != 0 }
  public var hasExtendedL2: Bool { incompatibleFeatures & Self.incompatibleExtendedL2 != 0 }
  public var hasLazyRefcounts: Bool { compatibleFeatures & Self.compatibleLazyRefcounts != 0 }
  /// Bytes per L2 entry: 8, or 16 with extended L2 entries (qcow2 spec, "Extended L2 Entries").
  public var l2EntrySize: UInt64 { hasExtendedL2 ? 16 : 8 }
  /// log2 of the number of entries in one L2 table.
  public var l2Bits: UInt32 { clusterBits - (hasExtendedL2 ? 4 : 3) }

  public init(file: ImageFile) throws {
    let path = file.path
    func corrupt(_ detail: String) -> VDiskError { VDiskError.corrupt(path, at: 0, detail) }

    guard file.size >= 72 else {
      throw corrupt("file is too small (\(file.size) bytes) for a qcow2 header")
    }
    let fixed = ByteReader(
      try file.readBytes(at: 0, count: Int(min(file.size, 112)), what: "qcow2 header"), path: path)
    guard Self.hasMagic(try fixed.bytes(0, count: 4, "magic")) else {
      throw corrupt("not a qcow2 image (bad magic)")
    }
    version = try fixed.u32be(4, "version")
    guard version == 2 || version == 3 else {
      throw VDiskError.unsupported(path, "qcow2 version \(version) is not supported (only 2 and 3)")
    }
    clusterBits = try fixed.u32be(20, "cluster_bits")
    guard (9...21).contains(clusterBits) else {
      throw VDiskError.unsupported(
        path, "cluster_bits \(clusterBits) is outside the supported range 9…21 (512 B to 2 MiB)")
    }
    clusterSize = 1 << UInt64(clusterBits)
    let backingFileOffset = try fixed.u64be(8, "backing_file_offset")
    let backingFileSize = try fixed.u32be(16, "backing_file_size")
    virtualSize = try fixed.u64be(24, "size")
    cryptMethod = try fixed.u32be(32, "crypt_method")
    l1Size = try fixed.u32be(36, "l1_size")
    l1TableOffset = try fixed.u64be(40, "l1_table_offset")
    refcountTableOffset = try fixed.u64be(48, "refcount_table_offset")
    refcountTableClusters = try fixed.u32be(56, "refcount_table_clusters")
    snapshotCount = try fixed.u32be(60, "nb_snapshots")
    snapshotsOffset = try fixed.u64be(64, "snapshots_offset")

    if version == 2 {
      incompatibleFeatures = 0
      compatibleFeatures = 0
      autoclearFeatures = 0
      refcountOrder = 4
      headerLength = 72
    } else {
      guard fixed.count >= 104 else {
        throw corrupt("file is too small (\(file.size) bytes) for a version 3 qcow2 header")
      }
      incompatibleFeatures = try fixed.u64be(72, "incompatible_features")
      compatibleFeatures = try fixed.u64be(80, "compatible_features")
      autoclearFeatures = try fixed.u64be(88, "autoclear_features")
      refcountOrder = try fixed.u32be(96, "refcount_order")
      headerLength = try fixed.u32be(100, "header_length")
      // qcow2 spec, "Header": for version 3 header_length is at least 104 and a multiple of 8.
      guard headerLength >= 104, headerLength % 8 == 0 else {
        throw corrupt("header_length \(headerLength) is invalid (version 3 needs ≥ 104 and a multiple of 8)")
      }
      guard refcountOrder <= 6 else { throw corrupt("refcount_order \(refcountOrder) exceeds 6") }
    }
    guard UInt64(headerLength) <= clusterSize, UInt64(headerLength) <= file.size else {
      throw corrupt(
        "header_length \(headerLength) does not fit the first cluster (\(clusterSize) bytes) and the file (\(file.size) bytes)"
      )
    }
    compressionType = headerLength > 104 ? try fixed.u8(104, "compression_type") : 0

    // The first cluster (or as much of it as the file holds) carries extensions and backing name.
    let firstCluster = ByteReader(
      try file.readBytes(at: 0, count: Int(min(clusterSize, file.size)), what: "first cluster"), path: path)

    // Header extensions, walked with bounds (qcow2 spec, "Header extensions"): they end at the
    // backing file name when there is one, else at the end of the first cluster.
    var extensionEnd = firstCluster.count
    if backingFileOffset != 0, backingFileOffset < UInt64(extensionEnd) {
      extensionEnd = Int(backingFileOffset)
    }
    var names = QCOW2FeatureNames()
    var backingFormat: String?
    var dataFileName: String?
    if version >= 3 {
      var offset = Int(headerLength)
      var seen = Set<UInt32>()
      while offset + 8 <= extensionEnd {
        let type = try firstCluster.u32be(offset, "header extension type")
        let length = try firstCluster.u32be(offset + 4, "header extension length")
        if type == 0 { break }
        let dataStart = offset + 8
        guard UInt64(length) <= UInt64(extensionEnd - dataStart) else {
          throw corrupt(
            "header extension \(hex(UInt64(type))) at \(hex(offset)) has length \(length), which runs past the end of the header area (\(hex(extensionEnd)))"
          )
        }
        let data = try firstCluster.bytes(dataStart, count: Int(length), "header extension data")
        // qcow2 spec: each type appears at most once. Unknown types are ignored (as QEMU does),
        // so only a repeated extension we use is an error.
        let used: Set<UInt32> = [0xE279_2ACA, 0x6803_F857, 0x4441_5441]
        guard !used.contains(type) || seen.insert(type).inserted else {
          throw corrupt("header extension \(hex(UInt64(type))) appears more than once")
        }
        switch type {
        case 0xE279_2ACA:  // Backing file format name string
          guard data.count <= Self.maxNameLength else { throw corrupt("backing format name is too long") }
          backingFormat = String(decoding: data, as: UTF8.self)
        case 0x6803_F857:  // Feature name table
          names = QCOW2FeatureNames(data)
        case 0x4441_5441:  // External data file name string
          guard data.count <= Self.maxNameLength else { throw corrupt("external data file name is too long") }
          dataFileName = String(decoding: data, as: UTF8.self)
        default:
          break  // Bitmaps, FDE header pointer, unknown: not needed for reading.
        }
        // Padding rounds the extension up to a multiple of 8; `offset` strictly increases.
        offset = dataStart + (Int(length) + 7) & ~7
      }
    }
    self.backingFormat = backingFormat
    featureNames = names

    // Backing file name: within the first cluster and the file, at most 1023 bytes.
    if backingFileOffset != 0 {
      guard backingFileSize <= UInt32(Self.maxNameLength) else {
        throw corrupt("backing file name length \(backingFileSize) exceeds \(Self.maxNameLength)")
      }
      let (end, overflow) = backingFileOffset.addingReportingOverflow(UInt64(backingFileSize))
      guard !overflow, end <= UInt64(firstCluster.count) else {
        throw corrupt(
          "backing file name at \(hex(backingFileOffset)) (\(backingFileSize) bytes) lies outside the first cluster"
        )
      }
      let name = String(
        decoding: try firstCluster.bytes(
          Int(backingFileOffset), count: Int(backingFileSize), "backing file name"),
        as: UTF8.self)
      backingFileName = name.isEmpty ? nil : name
    } else {
      backingFileName = nil
    }

    // Features: refuse what we cannot read correctly (qcow2 spec, "incompatible_features").
    let unknown = incompatibleFeatures & ~Self.knownIncompatibleFeatures
    if unknown != 0 {
      let bits = (0..<64).filter { unknown & (1 << UInt64($0)) != 0 }
      let listed = bits.map { bit in
        names.name(type: .incompatible, bit: bit).map { "\(bit) (\"\($0)\")" } ?? "\(bit)"
      }
      throw VDiskError.unsupported(
        path,
        "unsupported incompatible feature \(bits.count == 1 ? "bit" : "bits") \(listed.joined(separator: ", "))"
      )
    }
    switch cryptMethod {
    case 0: break
    case 1, 2:
      throw VDiskError.unsupported(
        path, "encrypted images are not supported (crypt_method \(cryptMethod == 1 ? "AES" : "LUKS"))")
    default:
      throw VDiskError.unsupported(path, "unknown crypt_method \(cryptMethod)")
    }
    // qcow2 spec, "compression_type": non-zero exactly when incompatible bit 3 is set.
    if incompatibleFeatures & Self.incompatibleCompressionType != 0 {
      switch compressionType {
      case 0: throw corrupt("compression type bit is set but compression_type is 0")
      case 1: break  // zstd, decoded by CompressedClusters
      default: throw VDiskError.unsupported(path, "unknown compression_type \(compressionType)")
      }
    } else if compressionType != 0 {
      throw corrupt("compression_type is \(compressionType) but the compression type bit is not set")
    }
    // qcow2 spec, "cluster_bits": extended L2 entries need clusters of at least 16 KiB.
    if incompatibleFeatures & Self.incompatibleExtendedL2 != 0, clusterBits < 14 {
      throw corrupt("extended L2 entries need cluster_bits ≥ 14 (found \(clusterBits))")
    }
    if incompatibleFeatures & Self.incompatibleDataFile != 0 {
      guard let dataFileName, !dataFileName.isEmpty else {
        throw corrupt("the external data file bit is set but the image names no data file")
      }
      externalDataFileName = dataFileName
      dataFileIsRaw = autoclearFeatures & Self.autoclearDataFileRaw != 0
    } else {
      externalDataFileName = nil
      dataFileIsRaw = false
    }

    // Tables: aligned, sized within hard limits, and (for the L1 table we read) inside the file.
    guard virtualSize <= UInt64(Int64.max) else { throw corrupt("virtual size \(virtualSize) is too large") }
    let clusterMask = clusterSize - 1
    let l2Entries: UInt64 = clusterSize / (incompatibleFeatures & Self.incompatibleExtendedL2 != 0 ? 16 : 8)
    let clusters = virtualSize / clusterSize + (virtualSize & clusterMask == 0 ? 0 : 1)
    l1EntriesNeeded = clusters / l2Entries + (clusters % l2Entries == 0 ? 0 : 1)
    let (coverage, coverageOverflow) = l1EntriesNeeded.multipliedReportingOverflow(by: clusterSize)
    l2CoverageBytes = coverageOverflow ? UInt64.max : coverage
    guard l1EntriesNeeded * 8 <= Self.maxL1Bytes else {
      throw VDiskError.unsupported(
        path,
        "virtual size \(virtualSize) needs an L1 table of \(l1EntriesNeeded) entries, more than the 64 MiB limit"
      )
    }
    guard UInt64(l1Size) * 8 <= Self.maxL1Bytes else {
      throw corrupt(
        "l1_size \(l1Size) needs more than 64 MiB of memory (limit \(Self.maxL1Bytes / 8) entries)")
    }
    guard UInt64(l1Size) >= l1EntriesNeeded else {
      throw corrupt(
        "l1_size \(l1Size) is too small for virtual size \(virtualSize) (needs \(l1EntriesNeeded) entries)")
    }
    if l1EntriesNeeded > 0 {
      guard l1TableOffset & clusterMask == 0, l1TableOffset != 0 else {
        throw corrupt("L1 table offset \(hex(l1TableOffset)) is not cluster-aligned")
      }
      let (l1End, l1Overflow) = l1TableOffset.addingReportingOverflow(l1EntriesNeeded * 8)
      guard !l1Overflow, l1End <= file.size else {
        throw corrupt(
          "L1 table at \(hex(l1TableOffset)) (\(l1EntriesNeeded) entries) lies beyond end of file (size \(hex(file.size)))"
        )
      }
    }
    guard refcountTableOffset & clusterMask == 0 else {
      throw corrupt("refcount table offset \(hex(refcountTableOffset)) is not cluster-aligned")
    }
    let (refcountBytes, refcountBytesOverflow) = UInt64(refcountTableClusters).multipliedReportingOverflow(
      by: clusterSize)
    let (_, refcountOverflow) = refcountTableOffset.addingReportingOverflow(refcountBytes)
    guard !refcountBytesOverflow, !refcountOverflow else { throw corrupt("refcount table extent overflows") }
    guard snapshotsOffset & clusterMask == 0 else {
      throw corrupt("snapshots offset \(hex(snapshotsOffset)) is not cluster-aligned")
    }
    guard snapshotCount <= Self.maxSnapshots else {
      throw corrupt("nb_snapshots \(snapshotCount) exceeds \(Self.maxSnapshots)")
    }
  }
}
