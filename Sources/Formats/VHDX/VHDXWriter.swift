import Synchronization
import VDiskCore

/// The write side of a VHDX layer opened read-write (fixed, dynamic or differencing). It plans
/// where guest bytes go and links what the engine wrote:
/// - a FULLY_PRESENT block is written in place (every block of a fixed disk made with
///   block_state_zero=off; qemu marks a new fixed disk's blocks ZERO with no offset, and like
///   qemu the writer then gives them new blocks at the end of the file);
/// - any other block of a fixed or dynamic disk, and a ZERO/UNDEFINED/UNMAPPED block of a
///   differencing disk, gets a new block at the end of the file (vhdx-notes, "Allocation"),
///   which the file is extended over, so what the write leaves reads as zeros, and becomes
///   FULLY_PRESENT;
/// - a NOT_PRESENT block of a differencing disk becomes FULLY_PRESENT when the write covers it,
///   else PARTIALLY_PRESENT with the written sectors marked in its chunk's sector bitmap (a new
///   1 MiB block the first time); unwritten sectors still read from the parent (MS-VHDX 2.4).
///   Sectors the write covers only in part are filled from the parent by the engine.
///
/// Metadata (BAT pages, sector bitmap pages) changes in the chain's `MetadataCache` and goes to
/// the file only through the log (`writeBack`). The mutex is never held across guest data I/O.
final class VHDXWriter: Sendable {
  let file: ImageFile
  let bat: BAT
  let bitmap: SectorBitmap
  let cache: MetadataCache
  let metadata: VHDXMetadata
  let locks = RangeLocks()
  let state: Mutex<VHDXWriteState>
  /// Serializes write-backs.
  let writeBacks = Mutex<Void>(())
  /// The current header; changed only by the header update procedure (DataWriteGuid).
  let header: Mutex<VHDXHeader>
  /// Whether this session wrote a new DataWriteGuid yet (MS-VHDX 2.2.2: before the first change
  /// a guest could see).
  let dataWriteGuidWritten = Atomic<Bool>(false)
  let logGuid: GUID
  let logOffset: UInt64
  let logLength: UInt64

  init(file: ImageFile, header: VHDXHeader, bat: BAT, metadata: VHDXMetadata, allocationEnd: UInt64) {
    self.file = file
    self.bat = bat
    self.bitmap = SectorBitmap(source: bat.source, cache: bat.cache)
    self.cache = bat.cache
    self.metadata = metadata
    self.header = Mutex(header)
    logGuid = header.logGuid
    logOffset = header.logOffset
    logLength = UInt64(header.logLength)
    state = Mutex(VHDXWriteState(file: file, bat: bat, cache: bat.cache, allocationEnd: allocationEnd))
  }

  var blockSize: UInt64 { bat.blockSize }

  /// Writes a new DataWriteGuid by the header update procedure, once per session, before the
  /// first change a guest could see (MS-VHDX 2.2.2). Other writers wait until it is durable.
  func noteDataChange() throws {
    guard !dataWriteGuidWritten.load(ordering: .acquiring) else { return }
    try header.withLock { current in
      guard !dataWriteGuidWritten.load(ordering: .acquiring) else { return }
      var changed = current
      changed.dataWriteGuid = .newRandom()
      current = try VHDXHeader.update(file, from: current, to: changed)
      dataWriteGuidWritten.store(true, ordering: .releasing)
    }
  }

  // MARK: Two-phase writes

  struct Pending: Sendable {
    var links: [VHDXLink]
  }

  /// Plans guest bytes `[offset, offset + length)` (their blocks held by the engine).
  func prepareWrite(at offset: UInt64, length: UInt64) throws -> PreparedWrite {
    let size = metadata.virtualSize
    let (end, overflow) = offset.addingReportingOverflow(length)
    guard length > 0, !overflow, end <= size else {
      throw VDiskError(
        .invalidArgument, path: file.path, offset: offset,
        "write of \(length) bytes at \(hex(offset)) lies outside the disk (size \(hex(size)))")
    }
    try noteDataChange()
    var targets: [WriteTarget] = []
    var links: [VHDXLink] = []
    try state.withLock { s in
      var block = offset / blockSize
      while block * blockSize < end {
        let blockStart = block * blockSize
        let blockEnd = min(blockStart + blockSize, size)
        let range = max(offset, blockStart)..<min(end, blockEnd)
        try plan(block, blockStart..<blockEnd, range, &s, &targets, &links)
        block += 1
      }
    }
    return PreparedWrite(targets: targets, token: Pending(links: links))
  }

  /// Plans the part `range` of one block.
  private func plan(
    _ block: UInt64, _ blockRange: Range<UInt64>, _ range: Range<UInt64>, _ s: inout VHDXWriteState,
    _ targets: inout [WriteTarget], _ links: inout [VHDXLink]
  ) throws {
    let index = bat.payloadIndex(block)
    let entry = try bat.entry(index)
    let sectorSize = metadata.logicalSectorSize
    func target(_ host: UInt64, _ guest: Range<UInt64>, fill: [Range<UInt64>] = []) {
      targets.append(
        WriteTarget(
          file: file, hostOffset: host + guest.lowerBound - blockRange.lowerBound, guest: guest, fill: fill))
    }
    switch entry.state {
    case BATEntry.fullyPresent:
      target(try checkedHost(entry, block), range)
    case BATEntry.partiallyPresent:
      guard bat.differencing else {
        throw VDiskError.corrupt(
          file.path, at: bat.region.offset + index * 8,
          "payload block \(block) is PARTIALLY_PRESENT in a disk without a parent")
      }
      let host = try checkedHost(entry, block)
      let bitmapOffset = try existingBitmap(block)
      let sectors = sectorRange(range)
      var fill: [Range<UInt64>] = []
      let chunkFirst = block / bat.chunkRatio * BAT.sectorsPerChunk
      // An edge sector the write covers in part keeps its other bytes: from this file when the
      // sector is present, else from the parent (the engine fills through the chain).
      let head = sectors.lowerBound * sectorSize..<range.lowerBound
      if !head.isEmpty, try !isPresent(bitmapOffset, sectors.lowerBound - chunkFirst) { fill.append(head) }
      let tail = range.upperBound..<sectors.upperBound * sectorSize
      if !tail.isEmpty, try !isPresent(bitmapOffset, sectors.upperBound - 1 - chunkFirst) {
        fill.append(tail)
      }
      target(host, sectors.lowerBound * sectorSize..<sectors.upperBound * sectorSize, fill: fill)
      links.append(
        .present(
          bitmapOffset: bitmapOffset,
          sectors: sectors.lowerBound - chunkFirst..<sectors.upperBound - chunkFirst))
    case BATEntry.notPresent, BATEntry.undefined, BATEntry.zero, BATEntry.unmapped, BATEntry.unmappedDraft:
      let host = try s.allocate(blockSize)
      let showsParent = bat.differencing && entry.state == BATEntry.notPresent
      if !showsParent || range == blockRange {
        target(host, range)
        links.append(.entry(index: index, raw: host | UInt64(BATEntry.fullyPresent)))
        return
      }
      let bitmapOffset = try bitmapForWriting(block, &s)
      let sectors = sectorRange(range)
      let chunkFirst = block / bat.chunkRatio * BAT.sectorsPerChunk
      let guest = sectors.lowerBound * sectorSize..<sectors.upperBound * sectorSize
      let fill = [guest.lowerBound..<range.lowerBound, range.upperBound..<guest.upperBound].filter {
        !$0.isEmpty
      }
      target(host, guest, fill: fill)
      links.append(.entry(index: index, raw: host | UInt64(BATEntry.partiallyPresent)))
      links.append(
        .present(
          bitmapOffset: bitmapOffset,
          sectors: sectors.lowerBound - chunkFirst..<sectors.upperBound - chunkFirst))
    default:
      throw VDiskError.corrupt(
        file.path, at: bat.region.offset + index * 8,
        "payload block \(block) has reserved BAT state \(entry.state)")
    }
  }

  /// The logical sectors (absolute indices) `range` touches.
  private func sectorRange(_ range: Range<UInt64>) -> Range<UInt64> {
    let size = metadata.logicalSectorSize
    return range.lowerBound / size..<(range.upperBound + size - 1) / size
  }

  private func isPresent(_ bitmapOffset: UInt64, _ sector: UInt64) throws -> Bool {
    try bitmap.run(blockOffset: bitmapOffset, sector: sector, limit: sector + 1).present
  }

  /// A FULLY or PARTIALLY_PRESENT block's file offset. The writable open checked every block
  /// against the file and the other blocks; blocks linked since are this writer's own.
  private func checkedHost(_ entry: BATEntry, _ block: UInt64) throws -> UInt64 {
    let offset = entry.fileOffset
    let (_, overflow) = offset.addingReportingOverflow(blockSize)
    guard offset >= VHDXFileIdentifier.headerSectionSize, !overflow else {
      throw VDiskError.corrupt(
        file.path, at: offset, "payload block \(block) at \(hex(offset)) is outside the file")
    }
    return offset
  }

  /// The sector bitmap block of `block`'s chunk, which a PARTIALLY_PRESENT block requires.
  private func existingBitmap(_ block: UInt64) throws -> UInt64 {
    let chunk = block / bat.chunkRatio
    let sb = try bat.entry(bat.bitmapIndex(chunk))
    guard sb.state == BATEntry.bitmapPresent, sb.fileOffset >= VHDXFileIdentifier.headerSectionSize else {
      throw VDiskError.corrupt(
        file.path, at: bat.region.offset + bat.bitmapIndex(chunk) * 8,
        "payload block \(block) is PARTIALLY_PRESENT but the sector bitmap of chunk \(chunk) is in state \(sb.state)"
      )
    }
    return sb.fileOffset
  }

  /// The sector bitmap block of `block`'s chunk, allocated (all zero: nothing present) when the
  /// chunk has none yet. Its BAT entry is set at once: an empty bitmap changes no read, and
  /// other blocks of the chunk, written meanwhile, must find it.
  private func bitmapForWriting(_ block: UInt64, _ s: inout VHDXWriteState) throws -> UInt64 {
    let chunk = block / bat.chunkRatio
    let index = bat.bitmapIndex(chunk)
    let sb = try bat.entry(index)
    if sb.state == BATEntry.bitmapPresent { return try existingBitmap(block) }
    let offset = try s.allocate(SectorBitmap.blockBytes)
    try s.setEntry(index, offset | UInt64(BATEntry.bitmapPresent))
    return offset
  }

  /// Links what a prepared write wrote: BAT entries, then sector bitmap bits.
  func commitWrite(_ prepared: PreparedWrite) throws {
    guard let pending = prepared.token as? Pending, !pending.links.isEmpty else { return }
    try state.withLock { s in
      for link in pending.links {
        switch link {
        case .entry(let index, let raw): try s.setEntry(index, raw)
        case .present(let bitmapOffset, let sectors):
          try s.setPresent(bitmapOffset: bitmapOffset, sectors: sectors)
        }
      }
    }
    try writeBack(ifOverBudget: true)
  }

  /// A failed write's new blocks stay allocated but unlinked (leaked space, never reused).
  func abortWrite(_ prepared: PreparedWrite) {}

  /// QEMU 7.2 cannot resize VHDX images either.
  func resize(to newSize: UInt64) throws {
    throw VDiskError.unsupported(
      file.path, "resizing VHDX images is not supported (qemu-img resize refuses them too)")
  }
}
