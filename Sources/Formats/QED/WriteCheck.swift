import VDiskCore

/// What a writable open checks before the writer trusts the image (hostile images are normal
/// input), as `qemu-img check` does for QED (qed_spec.txt, "Consistency checking"): every L2
/// table and data cluster offset is cluster-aligned and inside the file, each table whole, and no
/// cluster is used twice (by the header, the L1 table, an L2 table or data). A cluster used twice
/// would make an in-place write change other guest bytes or a table. Anything wrong is refused
/// with `.readOnly`, so a mount falls back to read-only and says why.
///
/// A clean check settles QED_F_NEED_CHECK (a crash in an earlier writer leaves at worst leaked
/// clusters, which need no repair) and drops unknown autoclear bits, as QEMU does when it opens
/// an image read-write.
enum QEDWriteCheck {
  /// The most clusters the check's bitmap covers (32 MiB of bits: a 1 TiB file of 4 KiB
  /// clusters).
  static let maxClusters: UInt64 = 1 << 28
  /// Entries read per chunk of an L2 table.
  static let chunkEntries: UInt64 = 1 << 16

  /// Checks the image and returns its header as the writer starts from (need-check and autoclear
  /// bits cleared on disk).
  static func check(_ header: QEDHeader, file: ImageFile) throws -> QEDHeader {
    let path = file.path
    func refuse(_ why: String) -> VDiskError {
      VDiskError(.readOnly, path: path, "\(why); refusing to write")
    }
    let clusterSize = UInt64(header.clusterSize)
    let clusters = (file.size + clusterSize - 1) / clusterSize
    guard clusters <= maxClusters else {
      throw refuse("the QED image has \(clusters) clusters, too many to check before writing")
    }
    var used = [UInt64](repeating: 0, count: Int((clusters + 63) / 64))
    func mark(_ offset: UInt64, count: UInt64, _ what: @autoclosure () -> String) throws {
      for c in offset / clusterSize..<(offset / clusterSize + count) {
        let (word, bit) = (Int(c / 64), UInt64(1) << (c % 64))
        guard used[word] & bit == 0 else {
          throw refuse("\(what()) at \(hex(c * clusterSize)) uses a cluster that is used elsewhere too")
        }
        used[word] |= bit
      }
    }
    try mark(0, count: UInt64(header.headerClusters), "the QED header")
    try mark(header.l1Offset, count: UInt64(header.tableSize), "the QED L1 table")
    let l1 = try file.readTable(
      of: UInt64.self, at: header.l1Offset, count: Int(header.l1EntriesNeeded), order: .littleEndian,
      what: "QED L1 table")
    for (index, table) in l1.enumerated() where table != 0 {
      let (end, overflow) = table.addingReportingOverflow(header.tableBytes)
      guard table % clusterSize == 0, table >= header.headerBytes, !overflow, end <= file.size else {
        throw refuse(
          "QED L1 entry \(index) names an L2 table at \(hex(table)) that is misaligned or outside the file")
      }
      try mark(table, count: UInt64(header.tableSize), "the QED L2 table of L1 entry \(index)")
      var done: UInt64 = 0
      while done < header.tableEntries {
        let n = min(chunkEntries, header.tableEntries - done)
        let entries = try file.readTable(
          of: UInt64.self, at: table + done * 8, count: Int(n), order: .littleEndian, what: "QED L2 table")
        for (i, entry) in entries.enumerated() where entry > QEDTables.zeroEntry {
          guard entry % clusterSize == 0, entry >= header.headerBytes, entry < file.size else {
            throw refuse(
              "QED L2 entry \(done + UInt64(i)) of the table at \(hex(table)) names a data cluster at \(hex(entry)) that is misaligned or outside the file"
            )
          }
          try mark(
            entry, count: 1, "the data cluster of L2 entry \(done + UInt64(i)) of the table at \(hex(table))")
        }
        done += n
      }
    }
    var settled = header
    settled.features.remove(.needCheck)
    settled.autoclearFeatures = 0
    if header.features.contains(.needCheck) || header.autoclearFeatures != 0 {
      try write(settled.autoclearFeatures, at: QEDHeader.autoclearOffset, file)
      try write(settled.features.rawValue, at: QEDHeader.featuresOffset, file)
      try file.dataSync()
    }
    return settled
  }

  private static func write(_ value: UInt64, at offset: UInt64, _ file: ImageFile) throws {
    try withUnsafeBytes(of: value.littleEndian) { try file.write($0, at: offset) }
  }
}
