import VDiskCore

/// A VirtualBox VDI image (dynamic or static) as one layer of a chain. Says where guest bytes
/// live; `LayerChain` reads them. Read-only.
public final class VDILayer: ImageLayer {
  public let file: ImageFile
  public let header: VDIHeader
  public let backing: (any ImageLayer)?
  let map: VDIBlockMap

  public var formatName: String { "vdi" }
  public var virtualSize: UInt64 { header.virtualSize }

  init(file: ImageFile, header: VDIHeader, backing: (any ImageLayer)?, cache: MetadataCache) {
    self.file = file
    self.header = header
    self.backing = backing
    map = VDIBlockMap(file: file, cache: cache, header: header)
  }

  /// Contract as `ImageLayer.extent(at:maxLength:)`. Allocated blocks are data, coalesced across
  /// blocks whose slots follow each other in the file (static images are one run); free blocks
  /// are unallocated and zero-marked blocks are zeros (vdi.md, "Block map").
  public func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
    let blockSize = UInt64(header.blockSize)
    let end = offset + maxLength
    var position = offset
    var first: Mapping?
    var length: UInt64 = 0
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
      if let head = first {
        switch (head, mapping) {
        case (.unallocated, .unallocated), (.zero, .zero): break
        case (.data(let h), .data(let next)) where h + length == next: break
        default: return Extent(offset: offset, length: length, mapping: head, file: file)
        }
        length += blockEnd - position
      } else {
        first = mapping
        length = blockEnd - position
      }
      position = blockEnd
    }
    return Extent(offset: offset, length: length, mapping: first ?? .unallocated, file: file)
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
        InfoField("uuid", .string(vdiUUIDText(header.uuid))),
      ])
  }
}

/// A VDI UUID as text: stored like a Windows GUID, the first three fields little-endian
/// (vdi.md: qemu byte-swaps them to print the RFC 4122 form).
func vdiUUIDText(_ b: [UInt8]) -> String {
  guard b.count == 16 else { return "" }
  let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15]
  var text = ""
  for (i, index) in order.enumerated() {
    if [4, 6, 8, 10].contains(i) { text += "-" }
    text += String(b[index] >> 4, radix: 16) + String(b[index] & 15, radix: 16)
  }
  return text
}
