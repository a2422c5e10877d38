import VDiskCore

/// A VHD (qemu: "vpc") image as one layer of a chain: fixed (raw data before the footer),
/// dynamic (BAT + sector bitmaps; holes read as zeros) or differencing (holes and clear bitmap
/// bits read from the parent). Says where guest bytes live; `LayerChain` reads them. Opened
/// read-write, it also takes writes (`VHDLayer+Write.swift`, through its `VHDWriter`).
public final class VHDLayer: ImageLayer {
  public let file: ImageFile
  public let footer: VHDFooter
  public let header: VHDDynamicHeader?
  public let backing: (any ImageLayer)?
  let table: VHDBlockTable?
  /// The recorded parent name (differencing disks), for `info`.
  let parentName: String?
  let parentPath: String?
  /// The write side, when the layer was opened read-write.
  let writer: VHDWriter?

  public var formatName: String { "vpc" }
  public var virtualSize: UInt64 { footer.virtualSize }
  var isDifferencing: Bool { footer.diskType == .differencing }

  init(
    file: ImageFile, footer: VHDFooter, header: VHDDynamicHeader?, table: VHDBlockTable?,
    backing: (any ImageLayer)?, parentName: String?, parentPath: String?, writer: VHDWriter? = nil
  ) {
    self.file = file
    self.footer = footer
    self.header = header
    self.table = table
    self.backing = backing
    self.parentName = parentName
    self.parentPath = parentPath
    self.writer = writer
  }

  /// Contract as `ImageLayer.extent(at:maxLength:)`. Fixed disks are one host-contiguous run.
  /// Dynamic and differencing runs follow the sector bitmap of each allocated block: set bits
  /// are data (contiguous within the block, never across blocks, as a bitmap sits between
  /// them); clear bits and unallocated blocks are zeros in a dynamic disk and the parent's in a
  /// differencing disk (vhd.asciidoc, "Sector bitmap").
  public func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
    guard let table else {
      return Extent(offset: offset, length: maxLength, mapping: .data(hostOffset: offset), file: file)
    }
    let hole: Mapping = isDifferencing ? .unallocated : .zero
    let end = offset + maxLength
    var position = offset
    var answer = RunAccumulator<Mapping>()

    scan: while position < end {
      let block = Int(position / table.blockSize)
      let blockStart = UInt64(block) * table.blockSize
      let blockEnd = min(end, blockStart + table.blockSize)
      let sector = try table.entry(block)
      if sector == VHDBlockTable.unallocated {
        guard answer.extend(hole, blockEnd - position) else { break }
        position = blockEnd
        continue
      }
      let data = try table.dataOffset(block: block, sector: sector)
      let bitmap = try table.bitmap(at: UInt64(sector) * 512)
      let limit = Int((blockEnd - blockStart + 511) / 512)
      while position < blockEnd {
        let s = Int((position - blockStart) / 512)
        let run = bitmap.runLength(from: s, limit: limit)
        let pieceEnd = min(blockEnd, blockStart + UInt64(s + run) * 512)
        let mapping: Mapping = bitmap.sectorBit(s) ? .data(hostOffset: data + (position - blockStart)) : hole
        guard answer.extend(mapping, pieceEnd - position) else { break scan }
        position = pieceEnd
      }
    }
    return Extent(offset: offset, length: answer.length, mapping: answer.first ?? hole, file: file)
  }

  public var info: ImageInfo {
    var specific: [InfoField] = [
      InfoField("subformat", .string(footer.diskType.name)),
      InfoField("creator-app", .string(footer.creatorName)),
      InfoField("size-source", .string(footer.sizeFromGeometry ? "chs" : "current-size")),
      InfoField("current-size", .integer(Int64(clamping: footer.currentSize))),
      InfoField(
        "geometry",
        .string("\(footer.cylinders)/\(footer.heads)/\(footer.sectorsPerTrack)")),
      InfoField("unique-id", .string(footer.uniqueID.text(uppercase: false))),
    ]
    if footer.location == 0 {
      specific.append(InfoField("footer", .string("copy at offset 0 (the one at the end is damaged)")))
    }
    if let header, isDifferencing {
      specific.append(InfoField("parent-unique-id", .string(header.parentUUID.text(uppercase: false))))
    }
    return ImageInfo(
      format: "vpc", filename: file.path, virtualSize: virtualSize,
      clusterSize: header.map { UInt64($0.blockSize) }, backingFilename: parentName,
      fullBackingFilename: parentPath, backingFormat: parentName == nil ? nil : "vpc",
      formatSpecific: specific)
  }
}
