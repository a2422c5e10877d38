import Logging
import VDiskCore

/// A qcow2 image (versions 2 and 3) as one layer of a chain: it says where guest bytes live and
/// decodes compressed clusters; `LayerChain` does the reading. Opened read-write, it also takes
/// writes (`QCOW2Layer+Write.swift`, through its `QCOW2Writer`).
public final class QCOW2Layer: ImageLayer {
  public let file: ImageFile
  public let header: QCOW2Header
  public let backing: (any ImageLayer)?
  /// The external data file guest clusters live in (qcow2 spec, "External data file bit").
  public let dataFile: ImageFile?
  /// The chain-wide cache this layer keeps its L2 tables in.
  public let metadataCache: MetadataCache
  let mapping: ClusterMapping
  let compressed: CompressedClusters
  /// The write side, when the layer was opened read-write.
  let writer: QCOW2Writer?

  public var formatName: String { "qcow2" }
  public var virtualSize: UInt64 { writer?.virtualSize ?? header.virtualSize }

  /// Opens the layer from an already parsed header. `dataFile` must be given exactly when the
  /// header names an external data file; `backing` is the layer below (nil at the bottom).
  /// `writable` (the file must be open read-write) makes the layer take writes; images marked
  /// corrupt or dirty are refused then.
  public init(
    file: ImageFile, header: QCOW2Header, backing: (any ImageLayer)?, dataFile: ImageFile?,
    metadataCache: MetadataCache, logger: Logger, writable: Bool = false
  ) throws {
    if header.hasExternalDataFile, dataFile == nil {
      throw VDiskError(
        .invalidArgument, path: file.path,
        "the image keeps its data in an external data file (\"\(header.externalDataFileName ?? "")\"), which was not opened"
      )
    }
    self.file = file
    self.header = header
    self.backing = backing
    self.dataFile = header.hasExternalDataFile ? dataFile : nil
    self.metadataCache = metadataCache
    writer =
      writable
      ? try QCOW2Writer(
        file: file, header: header, hasBacking: backing != nil || header.backingFileName != nil,
        cache: metadataCache) : nil
    mapping = try ClusterMapping(file: file, header: header, cache: metadataCache, activeL1: writer?.activeL1)
    compressed = CompressedClusters(
      file: file, clusterSize: Int(header.clusterSize), compressionType: header.compressionType)
    if header.isCorrupt {
      logger.warning(
        "image is marked corrupt (incompatible feature bit 1); opening read-only",
        metadata: ["path": "\(file.path)"])
    }
  }

  /// How many clusters were actually inflated (decompressed-cluster cache misses).
  public var decompressionCount: Int { compressed.decompressionCount }

  public func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
    try mapping.extent(at: offset, maxLength: maxLength, dataFile: dataFile)
  }

  public func decode(
    _ descriptor: CompressedDescriptor, into buffer: UnsafeMutableRawBufferPointer, skipping: Int
  )
    throws
  {
    try compressed.decode(descriptor, into: buffer, skipping: skipping)
  }

  public var info: ImageInfo {
    var fullBacking: String?
    if let name = header.backingFileName {
      fullBacking = name.hasPrefix("/") ? name : directory(of: file.path) + "/" + name
    }
    return ImageInfo(
      format: "qcow2", filename: file.path, virtualSize: virtualSize, clusterSize: header.clusterSize,
      backingFilename: header.backingFileName, fullBackingFilename: fullBacking,
      backingFormat: header.backingFormat, dirtyFlag: header.isDirty,
      formatSpecific: header.formatSpecificInfo)
  }
}

/// The directory part of `path` ("." for a bare name).
func directory(of path: String) -> String {
  guard let slash = path.lastIndex(of: "/") else { return "." }
  return slash == path.startIndex ? "/" : String(path[..<slash])
}

extension QCOW2Header {
  /// `format-specific.data` in `qemu-img info --output=json` names, plus our feature bitmaps.
  var formatSpecificInfo: [InfoField] {
    func bits(_ value: UInt64) -> InfoValue {
      .array((0..<64).filter { value & (1 << UInt64($0)) != 0 }.map { .integer(Int64($0)) })
    }
    var fields: [InfoField] = [
      InfoField("compat", .string(version >= 3 ? "1.1" : "0.10")),
      InfoField("compression-type", .string(compressionType == 1 ? "zstd" : "zlib")),
    ]
    if version >= 3 {
      fields.append(InfoField("lazy-refcounts", .bool(hasLazyRefcounts)))
    }
    fields.append(InfoField("refcount-bits", .integer(Int64(1) << Int64(refcountOrder))))
    if version >= 3 {
      fields.append(InfoField("corrupt", .bool(isCorrupt)))
      fields.append(InfoField("extended-l2", .bool(hasExtendedL2)))
    }
    if let externalDataFileName {
      fields.append(InfoField("data-file", .string(externalDataFileName)))
      fields.append(InfoField("data-file-raw", .bool(dataFileIsRaw)))
    }
    fields.append(InfoField("incompatible-features", bits(incompatibleFeatures)))
    fields.append(InfoField("compatible-features", bits(compatibleFeatures)))
    fields.append(InfoField("autoclear-features", bits(autoclearFeatures)))
    return fields
  }
}
