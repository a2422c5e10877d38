import Synchronization
import VDiskCore

/// The write side of a VHD layer opened read-write. The engine (`LayerChain`) holds the range
/// locks (one unit per block; a sector for a fixed disk), reads fill and writes data; this type
/// says where bytes go, allocates blocks and links them.
///
/// - Fixed: the data is the file's first bytes, written in place; the footer after it is never
///   touched (vhd.asciidoc, "Fixed-size hard disk image").
/// - Dynamic: a write to an unallocated block allocates one where the footer is and moves the
///   footer after it (`VHDWriteState.allocateBlock`); its bitmap has every bit set, as QEMU does
///   (vhd-notes.md, "Writing a dynamic VHD"; QEMU ignores the bitmap when reading, so a partial
///   bitmap would show the same zeros there and gain nothing). Blocks another tool allocated
///   with clear bits get the bits of the sectors written, their partial sectors filled with the
///   zeros they read as.
/// - Differencing (QEMU cannot write these): a new block's bitmap has only the written sectors'
///   bits; partial sectors at the edges of a write are filled from the parent through the chain
///   (vhd-notes.md: setting all bits is wrong there). Writes to an allocated block set the bits
///   of the sectors they cover. The parent is opened read-only by the opener.
///
/// BAT pages and bitmap changes stay dirty in the chain's `MetadataCache` until `flush` (or cache
/// pressure) writes them back after the data they cover (`Writeback.swift`).
final class VHDWriter: Sendable {
  let file: ImageFile
  /// nil for a fixed disk.
  let table: VHDBlockTable?
  let isDifferencing: Bool
  let virtualSize: UInt64
  /// The footer's bytes, written after each new block.
  let footer: [UInt8]
  let locks = RangeLocks()
  let state: Mutex<VHDWriteState>
  /// Serializes write-backs (each writes one snapshot of the dirty metadata).
  let writeBacks = Mutex<Void>(())

  init(
    file: ImageFile, start: VHDWriteStart, table: VHDBlockTable?, isDifferencing: Bool, virtualSize: UInt64
  )
    throws
  {
    guard file.isWritable else { throw VDiskError(.readOnly, path: file.path, "the image is open read-only") }
    self.file = file
    self.table = table
    self.isDifferencing = isDifferencing
    self.virtualSize = virtualSize
    footer = start.footer
    state = Mutex(VHDWriteState(footerOffset: start.footerOffset))
  }

  /// The engine's lock unit: a block (allocation and its bitmap are per block), or a sector of
  /// a fixed disk.
  var writeUnit: UInt64 { table?.blockSize ?? 512 }

  // MARK: Two-phase writes

  /// Plans the write of guest bytes `[offset, offset + length)` (their blocks held by the
  /// engine): allocates the blocks it needs, and says where each block's bytes go and what to
  /// fill.
  func prepareWrite(at offset: UInt64, length: UInt64) throws -> PreparedWrite {
    let (end, overflow) = offset.addingReportingOverflow(length)
    guard length > 0, !overflow, end <= virtualSize else {
      throw VDiskError(
        .invalidArgument, path: file.path, offset: offset,
        "write of \(length) bytes at \(hex(offset)) lies outside the disk (size \(hex(virtualSize)))")
    }
    guard let table else {
      return PreparedWrite(targets: [WriteTarget(file: file, hostOffset: offset, guest: offset..<end)])
    }
    var targets: [WriteTarget] = []
    var pending = VHDPendingWrite()
    var position = offset
    while position < end {
      let block = Int(position / table.blockSize)
      let blockStart = UInt64(block) * table.blockSize
      let write = position..<min(end, blockStart + table.blockSize)
      // The sectors the write touches (the disk's size is whole sectors).
      let sectors =
        Int((write.lowerBound - blockStart) / 512)..<Int((write.upperBound - blockStart + 511) / 512)
      let span = blockStart + UInt64(sectors.lowerBound) * 512..<blockStart + UInt64(sectors.upperBound) * 512
      let piece = Piece(block: block, blockStart: blockStart, write: write, sectors: sectors, span: span)
      let entry = try table.entry(block)
      if entry == VHDBlockTable.unallocated {
        targets.append(try allocate(piece, table: table, pending: &pending))
      } else {
        targets.append(try overwrite(piece, entry: entry, table: table, pending: &pending))
      }
      position = write.upperBound
    }
    return PreparedWrite(targets: targets, token: pending.isEmpty ? nil : pending as any Sendable)
  }

  /// The part of a write inside one block.
  private struct Piece {
    var block: Int
    var blockStart: UInt64
    /// Guest bytes written.
    var write: Range<UInt64>
    /// Sectors of the block the write touches, and their guest bytes.
    var sectors: Range<Int>
    var span: Range<UInt64>

    /// The parts of the edge sectors outside the write (to fill where those sectors are new).
    func edges(head: Bool, tail: Bool) -> [Range<UInt64>] {
      var fill: [Range<UInt64>] = []
      if head, span.lowerBound < write.lowerBound { fill.append(span.lowerBound..<write.lowerBound) }
      if tail, write.upperBound < span.upperBound { fill.append(write.upperBound..<span.upperBound) }
      return fill
    }
  }

  /// A write to an unallocated block: a new block at the end of the file.
  private func allocate(_ piece: Piece, table: VHDBlockTable, pending: inout VHDPendingWrite) throws
    -> WriteTarget
  {
    let words = Int(table.bitmapSize) / 8
    var bitmap = [UInt64](repeating: isDifferencing ? 0 : .max, count: words)
    if isDifferencing { bitmap.setSectorBits(piece.sectors) }
    let bytes = bitmap.bigEndianBytes
    let blockBytes = table.bitmapSize + table.blockSize
    let start = try state.withLock { s in
      try s.allocateBlock(file: file, footer: footer, bitmap: bytes, blockBytes: blockBytes)
    }
    pending.blocks.append(VHDNewBlock(index: piece.block, start: start, bitmap: bitmap))
    let data = start + table.bitmapSize
    guard isDifferencing else {
      return WriteTarget(
        file: file, hostOffset: data + (piece.write.lowerBound - piece.blockStart), guest: piece.write)
    }
    return WriteTarget(
      file: file, hostOffset: data + (piece.span.lowerBound - piece.blockStart), guest: piece.span,
      fill: piece.edges(head: true, tail: true))
  }

  /// A write to an allocated block: in place; sectors whose bits are clear get them set at
  /// commit, their bytes outside the write filled with what they read as now (zeros, or the
  /// parent's).
  private func overwrite(_ piece: Piece, entry: UInt32, table: VHDBlockTable, pending: inout VHDPendingWrite)
    throws -> WriteTarget
  {
    let start = UInt64(entry) * 512
    let data = try table.dataOffset(block: piece.block, sector: entry)
    let bitmap = try table.bitmap(at: start)
    if bitmap.allSectorBitsSet(piece.sectors) {
      return WriteTarget(
        file: file, hostOffset: data + (piece.write.lowerBound - piece.blockStart), guest: piece.write)
    }
    pending.bits.append(VHDBitUpdate(start: start, sectors: piece.sectors))
    let fill = piece.edges(
      head: !bitmap.sectorBit(piece.sectors.lowerBound), tail: !bitmap.sectorBit(piece.sectors.upperBound - 1)
    )
    return WriteTarget(
      file: file, hostOffset: data + (piece.span.lowerBound - piece.blockStart), guest: piece.span, fill: fill
    )
  }

  func commitWrite(_ prepared: PreparedWrite) throws {
    guard let pending = prepared.token as? VHDPendingWrite, let table else { return }
    try state.withLock { s in try s.link(pending, table: table) }
    try writeBack(ifOverBudget: true)
  }

  /// A failed write's new blocks are never linked: leaked space before the footer, no more.
  func abortWrite(_ prepared: PreparedWrite) {}

  // MARK: Discard, flush, resize

  /// VHD has no zero state, so every range the disk must read as zeros is written with zeros by
  /// the engine; except that in a dynamic disk an unallocated block reads as zeros already
  /// (vhd.asciidoc, "Block allocation table"). In a differencing disk zeros are written over the
  /// parent's data wherever the range lies.
  func discard(at offset: UInt64, length: UInt64, mode: DiscardMode) throws -> [Range<UInt64>] {
    let end = offset + length
    guard let table, !isDifferencing else { return [offset..<end] }
    var ranges: [Range<UInt64>] = []
    var position = offset
    while position < end {
      let block = Int(position / table.blockSize)
      let stop = min(end, UInt64(block + 1) * table.blockSize)
      if try table.entry(block) != VHDBlockTable.unallocated {
        ranges.appendJoining(position..<stop)
      }
      position = stop
    }
    return ranges
  }

  func flush() throws {
    try writeBack()
  }

  /// `qemu-img resize` refuses vpc images ("Image format driver does not support resize", QEMU
  /// 7.2), and so do we.
  func resize(to newSize: UInt64, allowShrink: Bool) throws {
    throw VDiskError.unsupported(
      file.path, "resizing VHD (vpc) images is not supported (qemu-img resize refuses them too)")
  }
}
