import VDiskCore

/// One Parallels expandable image (`.hds`) as a layer of a chain: says where guest bytes live,
/// and `LayerChain` reads them. Opened read-write (`dataEnd` given: where the data area ends),
/// it also takes writes (`ParallelsLayer+Write.swift`, through its `ParallelsWriter`).
public final class ParallelsLayer: ImageLayer {
  public let file: ImageFile
  public let header: ParallelsHeader
  public let backing: (any ImageLayer)?
  let bat: ParallelsBAT
  /// The write side, when the layer was opened read-write.
  let writer: ParallelsWriter?

  public var formatName: String { ParallelsDriver.name }
  public var virtualSize: UInt64 { header.virtualSize }

  init(
    file: ImageFile, header: ParallelsHeader, backing: (any ImageLayer)?, cache: MetadataCache,
    dataEnd: UInt64? = nil
  ) throws {
    self.file = file
    self.header = header
    self.backing = backing
    let bat = ParallelsBAT(file: file, cache: cache, header: header)
    self.bat = bat
    writer = try dataEnd.map { try ParallelsWriter(file: file, bat: bat, dataEnd: $0) }
  }

  /// Contract as `ImageLayer.extent(at:maxLength:)`. A cluster with a BAT entry is data,
  /// coalesced across clusters that follow each other in the file; a zero entry, or a cluster
  /// past the BAT, is not allocated (parallels.txt, "BAT": "considered as filled with zeroes"
  /// at the bottom of a chain; a snapshot layer's parent answers in a bundle).
  public func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
    let clusterSize = header.clusterSize
    let end = offset + maxLength
    var position = offset
    var run = RunAccumulator<Mapping>()
    let batEnd = UInt64(header.batEntries) * clusterSize
    while position < end {
      let cluster = position / clusterSize
      if position >= batEnd {
        guard run.extend(.unallocated, end - position) else { break }
        break
      }
      let clusterEnd = min(end, (cluster + 1) * clusterSize)
      let entry = try bat.entry(cluster)
      let mapping: Mapping
      if entry == 0 {
        mapping = .unallocated
      } else {
        mapping = .data(
          hostOffset: try bat.dataOffset(cluster: cluster, entry: entry) + position % clusterSize)
      }
      guard run.extend(mapping, clusterEnd - position) else { break }
      position = clusterEnd
    }
    return Extent(offset: offset, length: run.length, mapping: run.first ?? .unallocated, file: file)
  }

  public var info: ImageInfo {
    ImageInfo(
      format: formatName, filename: file.path, virtualSize: virtualSize, clusterSize: header.clusterSize,
      dirtyFlag: header.isDirty,
      formatSpecific: [
        InfoField("signature", .string(header.signature.text)),
        InfoField("bat-entries", .integer(Int64(header.batEntries))),
        InfoField("data-offset", .integer(Int64(header.dataOffset))),
      ])
  }
}
