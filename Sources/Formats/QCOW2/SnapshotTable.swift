import VDiskCore

/// Where the internal snapshot table and the snapshots' L1 tables lie (qcow2 spec, "Snapshots"),
/// so that the writer never allocates over them. The writer never changes snapshots: their
/// clusters are protected by their refcounts, and writes to shared clusters copy first.
enum SnapshotTable {
  /// QEMU's limit on a snapshot entry's extra data.
  static let maxExtraData: UInt32 = 1024
  /// QEMU's limit on the size of the whole table.
  static let maxTableBytes: UInt64 = 64 << 20

  /// Host byte ranges of the snapshot table and of every snapshot's L1 table.
  static func extents(file: ImageFile, header: QCOW2Header) throws -> [Range<UInt64>] {
    guard header.snapshotCount > 0 else { return [] }
    func corrupt(_ detail: String) -> VDiskError {
      VDiskError.corrupt(file.path, at: header.snapshotsOffset, detail)
    }
    var ranges: [Range<UInt64>] = []
    var position = header.snapshotsOffset
    for index in 0..<header.snapshotCount {
      let fixed = ByteReader(
        try file.readBytes(at: position, count: 40, what: "snapshot table entry \(index)"), path: file.path,
        baseOffset: position)
      let l1Offset = try fixed.u64be(0, "snapshot L1 table offset")
      let l1Size = try fixed.u32be(8, "snapshot L1 size")
      let idLength = try fixed.u16be(12, "snapshot ID length")
      let nameLength = try fixed.u16be(14, "snapshot name length")
      let extra = try fixed.u32be(36, "snapshot extra data size")
      guard extra <= maxExtraData else { throw corrupt("snapshot \(index) has \(extra) bytes of extra data") }
      guard l1Offset & (header.clusterSize - 1) == 0, UInt64(l1Size) * 8 <= QCOW2Header.maxL1Bytes else {
        throw corrupt("snapshot \(index) has an invalid L1 table (\(hex(l1Offset)), \(l1Size) entries)")
      }
      if l1Size > 0 { ranges.append(l1Offset..<l1Offset + UInt64(l1Size) * 8) }
      let length = (40 + UInt64(extra) + UInt64(idLength) + UInt64(nameLength) + 7) & ~7
      position += length
      guard position - header.snapshotsOffset <= maxTableBytes else {
        throw corrupt("snapshot table is too large")
      }
    }
    ranges.append(header.snapshotsOffset..<position)
    return ranges
  }
}
