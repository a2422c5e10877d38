import VDiskCore

/// What a writable open re-checks before the writer trusts the image (hostile images are normal
/// input): the writer allocates the next block at slot cBlocksAllocated, as qemu and VirtualBox do
/// (vdi.md, "Writing (dynamic images)"), so that is safe only when the allocated entries name
/// exactly the slots 0..<cBlocksAllocated, each once, all inside the file. That is also what
/// `qemu-img check` demands of a vdi (vdi.md, "Block map": each slot belongs to at most one block,
/// and the allocated entries number cBlocksAllocated). Anything else is refused with `.readOnly`,
/// so a mount falls back to read-only and says why.
enum VDIWriteCheck {
  /// Offset of cBlocksAllocated in a v1.1 header (vdi.md, "Header v1.1"): where the one write of
  /// a write-back starts (`VDIWriter.writeMap`).
  static let countOffset: UInt64 = 0x184
  /// The most bytes, from cBlocksAllocated to the end of the map, that one write-back may rewrite
  /// (a map of 64 MiB covers 16 TiB at 1 MiB blocks).
  static let maxRegion: UInt64 = 64 << 20
  /// Entries read per chunk of the scan.
  static let chunkEntries = 1 << 18

  static func check(_ header: VDIHeader, file: ImageFile) throws {
    let path = file.path
    func refuse(_ why: String) -> VDiskError {
      VDiskError(.readOnly, path: path, "\(why); refusing to write")
    }
    guard header.version == VDIHeader.version11 else {
      throw refuse("writing legacy VDI 0.0 images is not supported")
    }
    let mapEnd = header.blockMapOffset + UInt64(header.blockCount) * 4
    guard mapEnd - countOffset <= maxRegion else {
      throw refuse(
        "the VDI block map ends at \(hex(mapEnd)), too far from the header for one crash-safe update (at most \(hex(maxRegion)) bytes)"
      )
    }
    let allocated = header.blocksAllocated
    guard allocated <= header.blockCount else {
      throw refuse(
        "the VDI header counts \(allocated) allocated blocks (cBlocksAllocated) but the image has only \(header.blockCount)"
      )
    }
    var seen = [UInt64](repeating: 0, count: (Int(allocated) + 63) / 64)
    var found: UInt32 = 0
    var index = 0
    let count = Int(header.blockCount)
    while index < count {
      let n = min(chunkEntries, count - index)
      let entries = try file.readTable(
        of: UInt32.self, at: header.blockMapOffset + UInt64(index) * 4, count: n, order: .littleEndian,
        what: "VDI block map")
      for (i, slot) in entries.enumerated() where VDIBlockMap.isAllocated(slot) {
        let block = index + i
        guard slot < allocated else {
          throw refuse(
            "VDI block \(block) names slot \(slot), but the header counts only \(allocated) allocated slots (cBlocksAllocated)"
          )
        }
        let (word, bit) = (Int(slot / 64), UInt64(1) << UInt64(slot % 64))
        guard seen[word] & bit == 0 else {
          throw refuse("VDI block \(block) names slot \(slot), which an earlier block uses too")
        }
        seen[word] |= bit
        found += 1
        try checkInsideFile(header, file: file, block: block, slot: slot, refuse: refuse)
      }
      index += n
    }
    guard found == allocated else {
      throw refuse(
        "the VDI block map has \(found) allocated blocks but the header counts \(allocated) (cBlocksAllocated)"
      )
    }
  }

  /// The part of block `block`'s slot that the disk uses lies inside the file.
  private static func checkInsideFile(
    _ header: VDIHeader, file: ImageFile, block: Int, slot: UInt32, refuse: (String) -> VDiskError
  ) throws {
    let blockSize = UInt64(header.blockSize)
    let start = UInt64(block) * blockSize
    // Blocks past the end of the disk (the map may be longer than the disk needs) are never read.
    guard start < header.virtualSize else { return }
    let used = min(blockSize, header.virtualSize - start)
    let data = header.dataOffset + UInt64(slot) * header.slotSize + UInt64(header.blockExtra)
    guard data + used <= file.size else {
      throw refuse(
        "VDI block \(block) (slot \(slot)) lies beyond end of file (size \(hex(file.size)))")
    }
  }
}
