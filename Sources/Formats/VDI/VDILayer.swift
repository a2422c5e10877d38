import VDiskCore

/// A VirtualBox VDI image (dynamic or static) as one layer of a chain. Says where guest bytes
/// live; `LayerChain` reads them. Opened read-write, it also takes writes
/// (`VDILayer+Write.swift`, through its `VDIWriter`).
public final class VDILayer: ImageLayer {
  public let file: ImageFile
  public let header: VDIHeader
  public let backing: (any ImageLayer)?
  let map: VDIBlockMap
  /// The write side, when the layer was opened read-write.
  let writer: VDIWriter?

  public var formatName: String { "vdi" }
  public var virtualSize: UInt64 { header.virtualSize }

  /// `writable` (the file open read-write, the image vetted by `VDIWriteCheck`) makes the layer
  /// take writes.
  init(
    file: ImageFile, header: VDIHeader, backing: (any ImageLayer)?, cache: MetadataCache,
    writable: Bool = false
  ) throws {
    self.file = file
    self.header = header
    self.backing = backing
    map = VDIBlockMap(file: file, cache: cache, header: header)
    writer = writable ? try VDIWriter(file: file, map: map) : nil
  }

  /// Contract as `ImageLayer.extent(at:maxLength:)`. Allocated blocks are data, coalesced across
  /// blocks whose slots follow each other in the file (static images are one run); free blocks
  /// are unallocated and zero-marked blocks are zeros (vdi.md, "Block map").
  public func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
    let blockSize = UInt64(header.blockSize)
    let end = offset + maxLength
    var position = offset
    var run = RunAccumulator<Mapping>()
    while position < end {
      let block = Int(position / blockSize)
      let blockEnd = min(end, (UInt64(block) + 1) * blockSize)
      let mapping: Mapping
      // Past the map (a size rounded up to whole sectors): nothing stored.
      let entry = block < Int(header.blockCount) ? try map.entry(block) : VDIBlockMap.free
      switch entry {
      case VDIBlockMap.free: mapping = .unallocated
      case VDIBlockMap.zero: mapping = .zero
      default:
        let data = try map.dataOffset(block: block, slot: entry)
        mapping = .data(hostOffset: data + position % blockSize)
      }
      guard run.extend(mapping, blockEnd - position) else { break }
      position = blockEnd
    }
    return Extent(offset: offset, length: run.length, mapping: run.first ?? .unallocated, file: file)
  }

  public var info: ImageInfo {
    ImageInfo(
      format: "vdi", filename: file.path, virtualSize: virtualSize, clusterSize: UInt64(header.blockSize),
      formatSpecific: [
        InfoField("image-type", .string(header.imageType.name)),
        InfoField("version", .string("\(header.version >> 16).\(header.version & 0xFFFF)")),
        InfoField("blocks", .integer(Int64(header.blockCount))),
        InfoField("blocks-allocated", .integer(Int64(header.blocksAllocated))),
        InfoField("block-extra", .integer(Int64(header.blockExtra))),
        InfoField("uuid", .string(header.uuid.text(uppercase: false))),
      ])
  }
}
