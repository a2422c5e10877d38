import VDiskCore

/// A QED image as one layer of a chain. Says where guest bytes live; `LayerChain` reads them.
/// Opened read-write, it also takes writes (`QEDLayer+Write.swift`, through its `QEDWriter`).
public final class QEDLayer: ImageLayer {
  public let file: ImageFile
  public let header: QEDHeader
  public let backing: (any ImageLayer)?
  let tables: QEDTables
  /// The write side, when the layer was opened read-write.
  let writer: QEDWriter?

  public var formatName: String { "qed" }
  public var virtualSize: UInt64 { tables.virtualSize }

  init(
    file: ImageFile, header: QEDHeader, backing: (any ImageLayer)?, cache: MetadataCache,
    writable: Bool = false
  ) throws {
    self.file = file
    self.header = header
    self.backing = backing
    tables = try QEDTables(file: file, header: header, cache: cache)
    writer = writable ? try QEDWriter(tables: tables, hasBacking: backing != nil) : nil
  }

  /// Contract as `ImageLayer.extent(at:maxLength:)`. Data clusters are coalesced while they
  /// follow each other in the file; unallocated L2 tables and entries are the backing file's,
  /// zero entries read as zeros (qed_spec.txt, "Unallocated L2 tables and data clusters", "Zero
  /// data clusters"). Stops at the end of an L2 table.
  public func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
    let clusterSize = tables.clusterSize
    let (l1Index, firstL2) = tables.indices(offset)
    let end = offset + min(maxLength, header.l2Coverage - offset % header.l2Coverage)
    guard let table = try tables.l2Offset(l1Index) else {
      return Extent(offset: offset, length: end - offset, mapping: .unallocated, file: file)
    }
    var position = offset
    var index = firstL2
    var run = RunAccumulator<Mapping>()
    while position < end {
      let clusterEnd = position + min(end - position, clusterSize - position % clusterSize)
      let mapping: Mapping
      switch try tables.decode(try tables.entry(table: table, index: index), table: table, index: index) {
      case .unallocated: mapping = .unallocated
      case .zero: mapping = .zero
      case .data(let host): mapping = .data(hostOffset: host + position % clusterSize)
      }
      guard run.extend(mapping, clusterEnd - position) else { break }
      position = clusterEnd
      index += 1
    }
    return Extent(offset: offset, length: run.length, mapping: run.first ?? .unallocated, file: file)
  }

  public var info: ImageInfo {
    var specific = [
      InfoField("table-size", .integer(Int64(header.tableSize))),
      InfoField("need-check", .bool(header.features.contains(.needCheck))),
    ]
    if header.compatFeatures != 0 {
      specific.append(InfoField("compat-features", .integer(Int64(bitPattern: header.compatFeatures))))
    }
    return ImageInfo(
      format: "qed", filename: file.path, virtualSize: virtualSize, clusterSize: tables.clusterSize,
      backingFilename: header.backingFileName,
      fullBackingFilename: header.backingFileName.map { PlanContext.resolve($0, relativeTo: file.path) },
      backingFormat: header.backingFormat, dirtyFlag: header.features.contains(.needCheck),
      formatSpecific: specific)
  }
}
