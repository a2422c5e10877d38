import VDiskCore

/// A VHDX image (fixed, dynamic or differencing) as one layer of a chain, read-only. It says
/// where guest bytes live from the BAT and, for PARTIALLY_PRESENT blocks, the sector bitmaps;
/// `LayerChain` does the reading. A replayed log's sectors are served through `decode`.
public final class VHDXLayer: ImageLayer {
  public let file: ImageFile
  public let header: VHDXHeader
  public let metadata: VHDXMetadata
  public let backing: (any ImageLayer)?
  /// How many log entries were replayed into memory at open (0: the log was empty).
  public let replayedLogEntries: Int
  let source: ReplayedFile
  let regions: RegionTable
  let bat: BAT
  let bitmap: SectorBitmap
  /// The parent as the locator names it, and the path it was found at.
  let parentName: String?
  /// The write side, when the layer is the top of a chain opened read-write.
  let writer: VHDXWriter?

  public var formatName: String { "vhdx" }
  public var virtualSize: UInt64 { metadata.virtualSize }

  init(
    file: ImageFile, header: VHDXHeader, source: ReplayedFile, replayedLogEntries: Int, regions: RegionTable,
    metadata: VHDXMetadata, bat: BAT, backing: (any ImageLayer)?, parentName: String?,
    writer: VHDXWriter? = nil
  ) {
    self.file = file
    self.header = header
    self.source = source
    self.replayedLogEntries = replayedLogEntries
    self.regions = regions
    self.metadata = metadata
    self.bat = bat
    self.bitmap = SectorBitmap(source: source, cache: bat.cache)
    self.backing = backing
    self.parentName = parentName
    self.writer = writer
  }

  /// What one BAT entry (or one sector run of a PARTIALLY_PRESENT block) says.
  enum Piece: Equatable, RunPiece {
    case data(UInt64)
    case zero
    case unallocated

    var rawHostOffset: UInt64? {
      if case .data(let host) = self { return host }
      return nil
    }

    /// Zeros and unallocated runs merge; data merges while host-contiguous (`rawHostOffset`).
    var mergesWhenEqual: Bool { true }
  }

  /// The longest run from `offset` (at most `maxLength`) of one kind, host-contiguous for data.
  /// Reads BAT pages and sector bitmaps only; never guest data. Runs that a replayed log
  /// changes come back as `.compressed` so that `decode` can read them through the overlay.
  public func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
    let end = offset + maxLength
    var position = offset
    var run = RunAccumulator<Piece>()
    var page: (first: UInt64, words: [UInt64])?
    while position < end {
      let (piece, pieceEnd) = try self.piece(at: position, end: end, page: &page)
      guard run.extend(piece, pieceEnd - position) else { break }
      position = pieceEnd
    }
    return try finish(offset, run.first ?? .zero, run.length)
  }

  private func finish(_ offset: UInt64, _ piece: Piece, _ length: UInt64) throws -> Extent {
    switch piece {
    case .zero: return Extent(offset: offset, length: length, mapping: .zero, file: file)
    case .unallocated: return Extent(offset: offset, length: length, mapping: .unallocated, file: file)
    case .data(let host):
      guard let touched = source.firstTouched(in: host..<host + length) else {
        return Extent(offset: offset, length: length, mapping: .data(hostOffset: host), file: file)
      }
      if touched > host {
        return Extent(offset: offset, length: touched - host, mapping: .data(hostOffset: host), file: file)
      }
      let n = min(length, 1 << 20)
      let unit = CompressedDescriptor(
        hostOffset: host, compressedLength: Int(n), guestOffset: offset, decompressedLength: Int(n))
      return Extent(offset: offset, length: n, mapping: .compressed(unit), file: file)
    }
  }

  /// Reads replayed bytes: `descriptor` is a host run the log overlay changes.
  public func decode(
    _ descriptor: CompressedDescriptor, into buffer: UnsafeMutableRawBufferPointer, skipping: Int
  ) throws {
    guard skipping >= 0, skipping + buffer.count <= descriptor.decompressedLength else {
      throw VDiskError.corrupt(file.path, at: descriptor.hostOffset, "replayed run read outside its bounds")
    }
    try source.readFillingZeros(into: buffer, at: descriptor.hostOffset + UInt64(skipping))
  }

  /// The piece at `position` and where it ends (at most `end`, never past its block).
  func piece(at position: UInt64, end: UInt64, page: inout (first: UInt64, words: [UInt64])?) throws -> (
    Piece, UInt64
  ) {
    let blockSize = bat.blockSize
    let block = position / blockSize
    let blockStart = block * blockSize
    let blockEnd = min(blockStart + blockSize, metadata.virtualSize, end)
    let index = bat.payloadIndex(block)
    let entry: BATEntry
    if bat.resident != nil {
      entry = try bat.entry(index)
    } else {
      if page.map({ index < $0.first || index - $0.first >= UInt64($0.words.count) }) ?? true {
        page = try bat.page(containing: index)
      }
      guard let page else { return (.zero, blockEnd) }
      entry = BATEntry(raw: page.words[Int(index - page.first)])
    }
    switch entry.state {
    case BATEntry.notPresent:
      return (metadata.hasParent ? .unallocated : .zero, blockEnd)
    case BATEntry.undefined, BATEntry.zero, BATEntry.unmapped, BATEntry.unmappedDraft:
      return (.zero, blockEnd)
    case BATEntry.fullyPresent:
      let host = try checkedBlock(
        entry.fileOffset, length: min(blockSize, metadata.virtualSize - blockStart), block)
      return (.data(host + position - blockStart), blockEnd)
    case BATEntry.partiallyPresent:
      guard metadata.hasParent else {
        throw VDiskError.corrupt(
          file.path, at: bat.region.offset + index * 8,
          "payload block \(block) is PARTIALLY_PRESENT in a disk without a parent")
      }
      let host = try checkedBlock(
        entry.fileOffset, length: min(blockSize, metadata.virtualSize - blockStart), block)
      let chunk = block / bat.chunkRatio
      let sbIndex = bat.bitmapIndex(chunk)
      let sb = try bat.entry(sbIndex)
      guard sb.state == BATEntry.bitmapPresent else {
        throw VDiskError.corrupt(
          file.path, at: bat.region.offset + sbIndex * 8,
          "payload block \(block) is PARTIALLY_PRESENT but the sector bitmap of chunk \(chunk) is in state \(sb.state)"
        )
      }
      let sbOffset = try checked(
        sb.fileOffset, length: SectorBitmap.blockBytes, "sector bitmap of chunk \(chunk)")
      let sectorSize = metadata.logicalSectorSize
      let chunkFirstSector = chunk * BAT.sectorsPerChunk
      let run = try bitmap.run(
        blockOffset: sbOffset, sector: position / sectorSize - chunkFirstSector,
        limit: (blockEnd + sectorSize - 1) / sectorSize - chunkFirstSector)
      let runEnd = min(blockEnd, (chunkFirstSector + run.end) * sectorSize)
      return (run.present ? .data(host + position - blockStart) : .unallocated, runEnd)
    default:
      throw VDiskError.corrupt(
        file.path, at: bat.region.offset + index * 8,
        "payload block \(block) has reserved BAT state \(entry.state)")
    }
  }

  /// A payload block's file offset, checked.
  private func checkedBlock(_ offset: UInt64, length: UInt64, _ block: UInt64) throws -> UInt64 {
    try checked(offset, length: length, "payload block \(block)")
  }

  /// `offset` if `[offset, offset + length)` lies after the header section, within the file and
  /// clear of the BAT, metadata and log regions (qemu checks the same); else `.corrupt`.
  private func checked(_ offset: UInt64, length: UInt64, _ what: @autoclosure () -> String) throws -> UInt64 {
    let (end, overflow) = offset.addingReportingOverflow(length)
    guard offset >= VHDXFileIdentifier.headerSectionSize, !overflow, end <= source.size else {
      throw VDiskError.corrupt(
        file.path, at: offset,
        "\(what()) at \(hex(offset)) (length \(hex(length))) lies outside the file (size \(hex(source.size)))"
      )
    }
    // Runs on every read: plain comparisons (a list of candidate regions allocated each time).
    let range = offset..<end
    var clash: String?
    if regions.bat.range.overlaps(range) {
      clash = "BAT"
    } else if regions.metadata.range.overlaps(range) {
      clash = "metadata region"
    } else if header.logLength != 0,
      (header.logOffset..<header.logOffset + UInt64(header.logLength)).overlaps(range)
    {
      clash = "log"
    }
    if let clash {
      throw VDiskError.corrupt(file.path, at: offset, "\(what()) at \(hex(offset)) overlaps the \(clash)")
    }
    return offset
  }

  public var info: ImageInfo {
    var fields: [InfoField] = [
      InfoField("block-size", .integer(Int64(metadata.blockSize))),
      InfoField("logical-sector-size", .integer(Int64(metadata.logicalSectorSize))),
      InfoField("physical-sector-size", .integer(Int64(metadata.physicalSectorSize))),
      InfoField("has-parent", .bool(metadata.hasParent)),
      InfoField("leave-blocks-allocated", .bool(metadata.leaveBlocksAllocated)),
      InfoField("log-replayed", .bool(replayedLogEntries > 0)),
      // A log with entries to replay: the file was not closed cleanly (read-only opens replay it
      // in memory; a read-write open writes it into the file first).
      InfoField("log-pending", .bool(replayedLogEntries > 0 && writer == nil)),
      InfoField(
        "data-write-guid", .string((writer?.header.withLock { $0 } ?? header).dataWriteGuid.description)),
    ]
    if let locator = metadata.parentLocator {
      fields.append(InfoField("parent-linkage", .string(locator.linkage.description)))
    }
    return ImageInfo(
      format: "vhdx", filename: file.path, virtualSize: metadata.virtualSize, clusterSize: metadata.blockSize,
      backingFilename: parentName, fullBackingFilename: parentName == nil ? nil : backing?.file.path,
      backingFormat: parentName == nil ? nil : "vhdx", formatSpecific: fields)
  }
}
