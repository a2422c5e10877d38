import Logging
import VDiskCore

/// What opening a VHDX for writing does before the first write (MS-VHDX 2.2.2, 2.3.3;
/// vhdx-notes "Header" and "Replay"): a new FileWriteGuid, a pending log replayed into the file
/// itself, and a LogGuid of this session's own in the headers, under which the writer logs.
enum WritableOpen {
  /// The most bytes of zero descriptors a replay may write (a hostile log could name a petabyte).
  static let maxReplayedZeros: UInt64 = 1 << 30

  /// Replays a pending log into the file (synced), then makes the headers carry a new
  /// FileWriteGuid and a new LogGuid. Returns the current header and how many log entries were
  /// replayed.
  static func prepare(_ file: ImageFile, header: VHDXHeader, logger: Logger) throws -> (VHDXHeader, Int) {
    guard header.logLength >= 1 << 20 else {
      throw VDiskError(
        .readOnly, path: file.path, "the VHDX has no log (LogLength \(header.logLength)); writing needs one")
    }
    var current = header
    var replayed = 0
    if header.hasLog {
      let (overlay, count) = try VHDXLog.replay(file, header: header, logger: logger)
      if count > 0 {
        // MS-VHDX 2.2.2: a new FileWriteGuid before the first change, log replay included. The
        // log stays named (LogGuid kept) until its entries are in place, so a crash meanwhile
        // replays it again.
        var changed = current
        changed.fileWriteGuid = .newRandom()
        current = try VHDXHeader.update(file, from: current, to: changed)
        try apply(overlay, to: file)
        replayed = count
        logger.info(
          "replayed the VHDX log into the file before writing",
          metadata: ["path": "\(file.path)", "entries": "\(count)"])
      }
    }
    // This session's log: entries of any earlier LogGuid are never replayed again.
    var changed = current
    if replayed == 0 { changed.fileWriteGuid = .newRandom() }
    changed.logGuid = .newRandom()
    current = try VHDXHeader.update(file, from: current, to: changed)
    return (current, replayed)
  }

  /// Writes what a replay changed into the file (vhdx-notes, "Replay", steps 5-6): the file
  /// extended to LastFileOffset, zeroed ranges, then replayed sectors on top; then syncs.
  static func apply(_ overlay: ReplayedFile, to file: ImageFile) throws {
    if overlay.replayedSize > file.size { try file.setSize(overlay.replayedSize) }
    let zeroBytes = overlay.zeroRanges.reduce(UInt64(0)) { $0 + UInt64($1.count) }
    guard zeroBytes <= maxReplayedZeros else {
      throw VDiskError(
        .readOnly, path: file.path,
        "the VHDX log zeroes \(zeroBytes) bytes; refusing to replay more than \(maxReplayedZeros) for writing"
      )
    }
    let zeros = [UInt8](repeating: 0, count: 1 << 20)
    for range in overlay.zeroRanges {
      var position = range.lowerBound
      while position < range.upperBound {
        let n = Int(min(UInt64(zeros.count), range.upperBound - position))
        try zeros.withUnsafeBytes {
          try file.write(UnsafeRawBufferPointer(rebasing: $0[0..<n]), at: position)
        }
        position += UInt64(n)
      }
    }
    for offset in overlay.sortedSectors {
      guard let bytes = overlay.sectors[offset] else { continue }
      try bytes.withUnsafeBytes { try file.write($0, at: offset) }
    }
    try file.dataSync()
  }

  /// The checks a writer relies on that reading does not make in advance (the reader checks each
  /// block as it meets it): every allocated payload and sector bitmap block lies after the header
  /// section, within the file, clear of the BAT, metadata and log regions and of every other
  /// block, and no entry has a reserved state. Returns the first 1 MiB-aligned offset past
  /// everything the file holds, where new blocks go. Throws `.readOnly` (the image can still be
  /// read) naming the first problem.
  static func checkAllocations(
    _ file: ImageFile, bat: BAT, regions: RegionTable, header: VHDXHeader, metadata: VHDXMetadata
  ) throws -> UInt64 {
    func refuse(_ detail: String) -> VDiskError {
      VDiskError(.readOnly, path: file.path, "refusing to write this VHDX: \(detail)")
    }
    let mib: UInt64 = 1 << 20
    // What each taken range is: a fixed region's name, or the BAT entry of a block (its message
    // made only when it is shown).
    enum Owner {
      case region(String)
      case entry(UInt64)
      var text: String {
        switch self {
        case .region(let name): name
        case .entry(let i): "the block of BAT entry \(i)"
        }
      }
    }
    var taken: [(range: Range<UInt64>, what: Owner)] = [
      (0..<mib, .region("header section")), (regions.bat.range, .region("BAT region")),
      (regions.metadata.range, .region("metadata region")),
      (header.logOffset..<header.logOffset + UInt64(header.logLength), .region("log")),
    ]
    var end = taken.map(\.range.upperBound).max() ?? mib
    // Blocks are 1 MiB or more (MS-VHDX 2.2.2: BlockSize; sector bitmap blocks are 1 MiB), but
    // for a short last payload block: no more disjoint ones fit in the file. More allocated
    // entries than that must overlap; refusing then bounds `taken` by the file, not by the BAT
    // (whose entries may all name one block).
    let fitting = bat.source.size / mib + 2
    let stride = bat.chunkRatio + 1
    var index: UInt64 = 0
    while index < bat.entryCount {
      let count = min(BAT.pageEntries, bat.entryCount - index)
      let words = [UInt64](
        decoding: try bat.source.readBytes(
          at: bat.region.offset + index * 8, count: Int(count * 8), what: "BAT"), order: .littleEndian)
      for (k, raw) in words.enumerated() {
        let i = index + UInt64(k)
        let entry = BATEntry(raw: raw)
        let isBitmap = i % stride == bat.chunkRatio
        let length: UInt64
        if isBitmap {
          guard bat.differencing else { continue }
          switch entry.state {
          case BATEntry.notPresent: continue
          case BATEntry.bitmapPresent: length = SectorBitmap.blockBytes
          default: throw refuse("sector bitmap entry \(i) has reserved state \(entry.state)")
          }
        } else {
          let block = i - i / stride
          guard block < bat.dataBlocks else { continue }
          switch entry.state {
          case BATEntry.notPresent, BATEntry.undefined, BATEntry.zero, BATEntry.unmapped,
            BATEntry.unmappedDraft:
            continue
          case BATEntry.fullyPresent: break
          case BATEntry.partiallyPresent where bat.differencing: break
          default: throw refuse("payload block \(block) has state \(entry.state)")
          }
          length = min(bat.blockSize, metadata.virtualSize - block * bat.blockSize)
        }
        let offset = entry.fileOffset
        let (stop, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, stop <= bat.source.size else {
          throw refuse(
            "BAT entry \(i) places a block at \(hex(offset)) past the end of the file (\(hex(bat.source.size)))"
          )
        }
        // New blocks go after the whole block, even past a short last one.
        if !isBitmap { end = max(end, offset + bat.blockSize) }
        guard UInt64(taken.count) < fitting + 4 else {
          throw refuse(
            "more than \(fitting) blocks are allocated, more than fit in the file (\(hex(bat.source.size))): some overlap"
          )
        }
        taken.append((offset..<offset + length, .entry(i)))
        end = max(end, offset + length)
      }
      index += count
    }
    taken.sort { $0.range.lowerBound < $1.range.lowerBound }
    for k in taken.indices.dropFirst() where taken[k - 1].range.overlaps(taken[k].range) {
      throw refuse(
        "\(taken[k].what.text) at \(hex(taken[k].range.lowerBound)) overlaps \(taken[k - 1].what.text)")
    }
    end = max(end, bat.source.size)
    return (end + mib - 1) / mib * mib
  }
}
