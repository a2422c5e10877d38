import VDiskCore

/// Discard and zero-range (MS-VHDX 2.5.1.1; vhdx-notes "BAT"): whole payload blocks the range
/// covers change state through the log, with FileOffsetMB 0 (Hyper-V refuses a non-zero offset
/// in these states); their old blocks are leaked, never reused. What a state reads as decides:
/// - fixed or dynamic: PAYLOAD_BLOCK_UNMAPPED for a hole punched (reads as zeros: qemu and
///   vdiskfs), PAYLOAD_BLOCK_ZERO for a zeroed range;
/// - differencing: always PAYLOAD_BLOCK_ZERO, because a block the child does not hold
///   (NOT_PRESENT, and UNMAPPED by MS-VHDX) shows the parent's data, which must not show through;
/// - a fixed disk (LeaveBlockAllocated) keeps every block and its state: the engine writes zeros
///   over what its blocks hold.
/// Blocks the range covers only in part go back to the engine to be written with zeros, unless
/// they read as zeros already.
extension VHDXWriter {
  func discard(at offset: UInt64, length: UInt64, mode: DiscardMode) throws -> [Range<UInt64>] {
    let size = metadata.virtualSize
    guard offset < size, length > 0 else { return [] }
    let end = offset + min(length, size - offset)
    let fixed = metadata.leaveBlocksAllocated
    try noteDataChange()
    let newState: UInt8 =
      bat.differencing || mode == .zeroRange ? BATEntry.zero : BATEntry.unmapped
    var leftovers: [Range<UInt64>] = []
    try state.withLock { s in
      var block = offset / blockSize
      while block * blockSize < end {
        let blockStart = block * blockSize
        let blockEnd = min(blockStart + blockSize, size)
        let index = bat.payloadIndex(block)
        block += 1
        let entry = try bat.entry(index)
        // Already zeros, whole or in part: nothing to do. In a differencing disk only ZERO is
        // sure to (MS-VHDX lets the parent show through the other states).
        let held = entry.state == BATEntry.fullyPresent || entry.state == BATEntry.partiallyPresent
        if entry.state == BATEntry.zero || (!bat.differencing && !held) { continue }
        guard offset <= blockStart, end >= blockEnd, !fixed else {
          let part = max(offset, blockStart)..<min(end, blockEnd)
          leftovers.appendJoining(part)
          continue
        }
        try s.setEntry(index, UInt64(newState))
      }
    }
    try writeBack(ifOverBudget: true)
    return leftovers
  }
}
