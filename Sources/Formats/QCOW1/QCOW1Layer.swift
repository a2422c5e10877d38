import VDiskCore

/// A qcow version 1 image as one layer of a chain, read-only (QEMU writes qcow v1, vdiskfs reads
/// it). Says where guest bytes live; `LayerChain` reads them; compressed clusters are inflated by
/// `decode`.
public final class QCOW1Layer: ImageLayer {
  public let file: ImageFile
  public let header: QCOW1Header
  public let backing: (any ImageLayer)?
  let tables: QCOW1Tables
  let compressed: QCOW1CompressedClusters

  public var formatName: String { "qcow" }
  public var virtualSize: UInt64 { header.virtualSize }

  init(file: ImageFile, header: QCOW1Header, backing: (any ImageLayer)?, cache: MetadataCache) throws {
    self.file = file
    self.header = header
    self.backing = backing
    tables = try QCOW1Tables(file: file, header: header, cache: cache)
    compressed = QCOW1CompressedClusters(file: file, clusterSize: Int(header.clusterSize))
  }

  /// Contract as `ImageLayer.extent(at:maxLength:)`. Raw clusters coalesce while they follow each
  /// other in the file; a compressed cluster is one extent of its own; an L2 table boundary ends
  /// a run.
  public func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
    let clusterSize = header.clusterSize
    let tableEnd = (offset / header.l2Coverage + 1) * header.l2Coverage
    let end = offset + min(maxLength, tableEnd - offset)
    var position = offset
    var run = RunAccumulator<Mapping>()
    while position < end {
      let clusterStart = position / clusterSize * clusterSize
      let clusterEnd = min(end, clusterStart + clusterSize)
      let mapping: Mapping
      switch try tables.cluster(at: position) {
      case .unallocated: mapping = .unallocated
      case .data(let host): mapping = .data(hostOffset: host + position - clusterStart)
      case .compressed(let host, let length):
        mapping = .compressed(
          CompressedDescriptor(
            hostOffset: host, compressedLength: length, guestOffset: clusterStart,
            decompressedLength: Int(clusterSize)))
      }
      guard run.extend(mapping, clusterEnd - position) else { break }
      position = clusterEnd
    }
    return Extent(offset: offset, length: run.length, mapping: run.first ?? .unallocated, file: file)
  }

  public func decode(
    _ descriptor: CompressedDescriptor, into buffer: UnsafeMutableRawBufferPointer, skipping: Int
  )
    throws
  {
    try compressed.decode(descriptor, into: buffer, skipping: skipping)
  }

  public var info: ImageInfo {
    ImageInfo(
      format: "qcow", filename: file.path, virtualSize: virtualSize, clusterSize: header.clusterSize,
      backingFilename: header.backingFileName,
      fullBackingFilename: header.backingFileName.map { PlanContext.resolve($0, relativeTo: file.path) },
      formatSpecific: [
        InfoField("l2-entries", .integer(Int64(header.l2Entries))),
        InfoField("mtime", .integer(Int64(header.mtime))),
      ])
  }
}
