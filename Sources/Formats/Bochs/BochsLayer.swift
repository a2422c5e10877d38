import VDiskCore

/// A Bochs growing redolog image as a read-only layer. The catalog names each extent's slot
/// (0xFFFFFFFF: none); a slot holds the extent's sector bitmap, then its data; a sector whose bit
/// is clear is not stored (QEMU reads it as zeros).
public final class BochsLayer: ImageLayer {
  /// Catalog entry of an extent never written.
  static let notAllocated: UInt32 = 0xFFFF_FFFF
  /// The cache's table kind for extent bitmaps.
  static let bitmapKind: UInt8 = 0x42

  public let file: ImageFile
  public let header: BochsHeader
  public let backing: (any ImageLayer)?
  /// The catalog, read whole at open (at most 1M entries, as QEMU does).
  let catalog: [UInt32]
  let cache: MetadataCache

  public var formatName: String { BochsDriver.name }
  public var virtualSize: UInt64 { header.virtualSize }

  init(
    file: ImageFile, header: BochsHeader, catalog: [UInt32], backing: (any ImageLayer)?, cache: MetadataCache
  ) {
    self.file = file
    self.header = header
    self.catalog = catalog
    self.backing = backing
    self.cache = cache
  }

  /// Where slot `slot` starts (its bitmap), checked to lie inside the file with its bitmap.
  func slotOffset(extent index: Int, slot: UInt32) throws -> UInt64 {
    let start = header.dataOffset + UInt64(slot) * header.slotSize
    guard start <= file.size, UInt64(header.bitmapSize) <= file.size - start else {
      throw VDiskError.corrupt(
        file.path, at: header.catalogOffset + UInt64(index) * 4,
        "Bochs extent \(index) (slot \(slot) at \(hex(start))) lies beyond end of file (size \(hex(file.size)))"
      )
    }
    return start
  }

  /// The sector bitmap of the extent whose slot starts at `slot`, as 64-bit words (bit `s` of
  /// the extent's sector `s`, least significant first within each byte as stored).
  func bitmap(at slot: UInt64) throws -> [UInt64] {
    let bytes = Int((header.sectorsPerExtent + 7) / 8)
    let key = TableKey(file: file, offset: slot, kind: Self.bitmapKind)
    return try cache.value(for: key, cost: (bytes + 7) / 8 * 8) {
      let raw = try file.readBytes(at: slot, count: bytes, what: "Bochs extent bitmap")
      var words = [UInt64](repeating: 0, count: (bytes + 7) / 8)
      for (i, byte) in raw.enumerated() { words[i / 8] |= UInt64(byte) << UInt64(8 * (i % 8)) }
      return words
    }
  }

  /// Contract as `ImageLayer.extent(at:maxLength:)`. Runs of sectors with the same bitmap bit,
  /// coalesced across extents whose data follow each other in the file.
  public func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
    let extentSize = UInt64(header.extentSize)
    let end = offset + maxLength
    var position = offset
    var run = RunAccumulator<Mapping>()
    extents: while position < end {
      let index = Int(position / extentSize)
      let extentStart = UInt64(index) * extentSize
      let extentEnd = min(end, extentStart + extentSize)
      let slot = catalog[index]
      guard slot != Self.notAllocated else {
        guard run.extend(.unallocated, extentEnd - position) else { break }
        position = extentEnd
        continue
      }
      let slotStart = try slotOffset(extent: index, slot: slot)
      let words = try bitmap(at: slotStart)
      let dataStart = slotStart + header.bitmapBytes
      while position < extentEnd {
        let sector = (position - extentStart) / 512
        let sectorEnd = min(extentEnd, extentStart + (sector + 1) * 512)
        let stored = words[Int(sector / 64)] >> (sector % 64) & 1 == 1
        let mapping: Mapping
        if stored {
          let host = dataStart + (position - extentStart)
          guard dataStart + (sector + 1) * 512 <= file.size else {
            throw VDiskError.corrupt(
              file.path, at: header.catalogOffset + UInt64(index) * 4,
              "Bochs extent \(index) sector \(sector) at \(hex(host)) lies beyond end of file (size \(hex(file.size)))"
            )
          }
          mapping = .data(hostOffset: host)
        } else {
          mapping = .unallocated
        }
        guard run.extend(mapping, sectorEnd - position) else { break extents }
        position = sectorEnd
      }
    }
    return Extent(offset: offset, length: run.length, mapping: run.first ?? .unallocated, file: file)
  }

  public var info: ImageInfo {
    ImageInfo(
      format: formatName, filename: file.path, virtualSize: virtualSize,
      clusterSize: UInt64(header.extentSize),
      formatSpecific: [
        InfoField("version", .integer(Int64(header.version >> 16))),
        InfoField("catalog-entries", .integer(Int64(header.catalogEntries))),
        InfoField("extents-allocated", .integer(Int64(catalog.filter { $0 != Self.notAllocated }.count))),
      ])
  }
}
