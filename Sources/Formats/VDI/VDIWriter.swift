import Synchronization
import VDiskCore

/// The write side of a VDI layer opened read-write (static or dynamic; `VDIWriteCheck` has
/// vetted the image). Plans where guest bytes go and links new blocks; the engine
/// (`LayerChain+Write.swift`) holds the range locks and does all data I/O.
///
/// Allocation (vdi.md, "Writing (dynamic images)"): qemu and VirtualBox put a new block in slot
/// cBlocksAllocated, so the slots in use must always be exactly 0..<cBlocksAllocated, or a later
/// writer of the image would hand out a slot that is still in use. Allocations are therefore
/// serialized, from `prepareWrite` to `commitWrite`/`abortWrite`, by `allocation` (an
/// `AllocationLock`): the slots of the one allocation in flight are `linked..<linked + n`, and an
/// aborted allocation leaves no hole (the next one reuses its slots). Writes into allocated blocks
/// never take it.
///
/// A new block reads as zeros where it is not written: its run covers the whole block, the rest
/// filled with the zeros the chain reads there (the engine writes no zeros past the end of the
/// file, it extends the file instead; a slot left behind by an aborted allocation or a crash gets
/// them written).
///
/// Changed map pages stay dirty in the chain's `MetadataCache` (counted against its budget) and
/// reach the file in `writeBack` (`MapWriteback.swift`).
final class VDIWriter: Sendable {
  let file: ImageFile
  let map: VDIBlockMap
  let state: Mutex<VDIWriteState>
  /// The engine's range locks, one unit per block.
  let locks = RangeLocks()
  /// Held by the one allocation in flight.
  let allocation = AllocationLock()
  /// Data sync, map, sync; one at a time.
  let writeBacks: DataFirstWriteback

  var cache: MetadataCache { map.cache }
  var header: VDIHeader { map.header }
  var blockSize: UInt64 { UInt64(map.header.blockSize) }

  init(file: ImageFile, map: VDIBlockMap) throws {
    guard file.isWritable else { throw VDiskError(.readOnly, path: file.path, "the image is open read-only") }
    self.file = file
    self.map = map
    state = Mutex(VDIWriteState(linked: map.header.blocksAllocated))
    writeBacks = DataFirstWriteback(file: file)
  }

  /// Where slot `slot` starts in the file (its cbBlockExtra prefix first).
  func slotStart(_ slot: UInt32) -> UInt64 { header.dataOffset + UInt64(slot) * header.slotSize }

  /// Where the guest bytes of slot `slot` start.
  func slotData(_ slot: UInt32) -> UInt64 { slotStart(slot) + UInt64(header.blockExtra) }

  // MARK: Two-phase writes

  /// Plans the write of guest bytes `[offset, offset + length)` (their blocks held by the engine):
  /// allocated blocks are written in place; free and zero blocks get new slots at the end of the
  /// data area.
  func prepareWrite(at offset: UInt64, length: UInt64) throws -> PreparedWrite {
    let (end, overflow) = offset.addingReportingOverflow(length)
    guard length > 0, !overflow, end <= header.virtualSize else {
      throw VDiskError(
        .invalidArgument, path: file.path, offset: offset,
        "write of \(length) bytes at \(hex(offset)) lies outside the disk (size \(hex(header.virtualSize)))")
    }
    let first = Int(offset / blockSize)
    let last = Int((end - 1) / blockSize)
    guard last < Int(header.blockCount) else {
      throw VDiskError.corrupt(
        file.path, "VDI block \(last) lies past the block map (\(header.blockCount) blocks)")
    }
    let entries = try (first...last).map { try self.map.entry($0) }
    let fresh = entries.filter { !VDIBlockMap.isAllocated($0) }.count
    guard fresh > 0 else {
      return PreparedWrite(
        targets: targets(first: first, entries: entries, from: offset, to: end))
    }
    let pending = try allocation.allocate { () throws -> [NewBlock] in
      let slot = state.withLock { $0.linked }
      guard UInt64(slot) + UInt64(fresh) <= UInt64(header.blockCount) else {
        throw VDiskError.corrupt(
          file.path, "VDI has no free slot for \(fresh) more blocks (\(slot) of \(header.blockCount) in use)")
      }
      var next = slot
      var blocks: [NewBlock] = []
      for (i, entry) in entries.enumerated() where !VDIBlockMap.isAllocated(entry) {
        blocks.append(NewBlock(index: first + i, slot: next))
        next += 1
      }
      return blocks
    }
    var assigned = entries
    for block in pending.plan { assigned[block.index - first] = block.slot }
    let runs = targets(
      first: first, entries: assigned, from: offset, to: end, fresh: Set(pending.plan.map(\.index)))
    return PreparedWrite(targets: runs, token: pending)
  }

  /// One run per block: the written part of an allocated block, or the whole of a new block with
  /// the rest filled (zeros: the chain still shows it free).
  private func targets(
    first: Int, entries: [UInt32], from offset: UInt64, to end: UInt64, fresh: Set<Int> = []
  ) -> [WriteTarget] {
    entries.enumerated().map { i, slot in
      let start = UInt64(first + i) * blockSize
      return .unit(
        start..<start + blockSize, at: slotData(slot), in: file, writing: offset..<end,
        isNew: fresh.contains(first + i))
    }
  }

  /// Links the blocks a prepared write allocated (their data is written), then writes back if
  /// dirty pages passed three quarters of the cache's budget.
  func commitWrite(_ prepared: PreparedWrite) throws {
    guard let pending = prepared.token as? PendingAllocation<[NewBlock]>,
      try allocation.commit(pending, link: { blocks in try state.withLock { s in try link(blocks, in: &s) } })
    else { return }
    try writeBack(ifOverBudget: true)
  }

  /// Forgets a prepared write whose data write failed: its slots were never linked, and the next
  /// allocation takes them again (writing those blocks whole, since the file now reaches them).
  func abortWrite(_ prepared: PreparedWrite) {
    guard let pending = prepared.token as? PendingAllocation<[NewBlock]> else { return }
    allocation.abort(pending)
  }

  /// Sets the map entries of `blocks` in copies of their cached pages, inserted dirty, and counts
  /// them. Pages are loaded first, so a failed load changes nothing.
  private func link(_ blocks: [NewBlock], in s: inout VDIWriteState) throws {
    var pages: [Int: [UInt64]] = [:]
    for block in blocks {
      let page = block.index / VDIBlockMap.pageEntries
      if pages[page] == nil { pages[page] = try map.words(page: page) }
    }
    for block in blocks {
      let page = block.index / VDIBlockMap.pageEntries
      pages[page]?[block.index - page * VDIBlockMap.pageEntries] = UInt64(block.slot)
    }
    for (page, words) in pages {
      cache.insert(map.key(page: page), words, cost: map.cost(page: page), dirty: true)
      s.dirtyPages.mark(page)
    }
    s.linked += UInt32(blocks.count)
  }

  // MARK: Discard, flush, resize

  /// Free and zero blocks already read as zeros (a VDI has no parent in vdiskfs), so there is
  /// nothing to do for them. Allocated blocks keep their slots and are handed back to be
  /// overwritten with zeros: marking one VDI_IMAGE_BLOCK_ZERO would leave its slot unused below
  /// cBlocksAllocated, and qemu and VirtualBox, which allocate at slot cBlocksAllocated, would
  /// then give a slot in use to a second block (vdi.md, "Writing (dynamic images)"); keeping the
  /// count at the old value instead is what `qemu-img check` reports as corruption.
  func discard(at offset: UInt64, length: UInt64, mode: DiscardMode) throws -> [Range<UInt64>] {
    let end = min(offset + length, header.virtualSize)
    guard offset < end else { return [] }
    var leftovers: [Range<UInt64>] = []
    var position = offset
    while position < end {
      let block = Int(position / blockSize)
      let blockEnd = min(end, (UInt64(block) + 1) * blockSize)
      if block < Int(header.blockCount), VDIBlockMap.isAllocated(try map.entry(block)) {
        leftovers.appendJoining(position..<blockEnd)
      }
      position = blockEnd
    }
    return leftovers
  }

  func flush() throws {
    try writeBack()
  }

  /// qemu cannot resize vdi images either (`qemu-img resize`: "Image format driver does not
  /// support resize"): growing past the map would mean moving data blocks.
  func resize(to newSize: UInt64, allowShrink: Bool) throws {
    guard newSize != header.virtualSize else { return }
    throw VDiskError.unsupported(
      file.path, "resizing VDI images is not supported (qemu-img resize cannot resize vdi either)")
  }
}

/// Everything the writer changes, behind `VDIWriter.state`: the count of allocated blocks and
/// which map pages are dirty. The pages themselves live in the chain's cache.
struct VDIWriteState {
  /// Allocated entries in the map as the cache holds it: cBlocksAllocated to write, and the slot
  /// the next allocation takes.
  var linked: UInt32
  /// cBlocksAllocated as the file holds it.
  var diskLinked: UInt32
  /// Dirty map pages by number.
  var dirtyPages = DirtySet<Int, Void>()

  init(linked: UInt32) {
    self.linked = linked
    diskLinked = linked
  }

  var hasDirtyMetadata: Bool { !dirtyPages.isEmpty || linked != diskLinked }
}

/// A block a prepared write allocated: its index in the map and its slot.
struct NewBlock: Sendable {
  var index: Int
  var slot: UInt32
}
