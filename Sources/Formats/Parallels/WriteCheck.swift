import VDiskCore

/// What a writable open checks before the writer trusts the image (hostile images are normal
/// input). The writer puts new clusters at the end of the data area, as QEMU does, so every
/// cluster the BAT names must lie in the data area, whole units of a cluster from its start,
/// each named once and inside the file (parallels.txt, "BAT": the requirements on cluster
/// offsets); the BAT must cover the disk; and the image must have been closed cleanly (QEMU
/// refuses to open a dirty image read-write, "cannot be opened read/write"). Anything else is
/// refused with `.readOnly`, so a mount falls back to read-only and says why.
enum ParallelsWriteCheck {
  /// The most cluster slots the scan tracks (a 16 MiB bitmap).
  static let maxSlots: UInt64 = 1 << 27
  /// Entries read per chunk of the scan.
  static let chunkEntries = 1 << 18

  /// Returns where the data area ends: the end of the last cluster, or the data offset.
  static func check(_ header: ParallelsHeader, file: ImageFile) throws -> UInt64 {
    let path = file.path
    func refuse(_ why: String) -> VDiskError {
      VDiskError(.readOnly, path: path, "\(why); refusing to write")
    }
    guard !header.isDirty else {
      throw refuse(
        "the Parallels image was not closed cleanly (in_use is set); `qemu-img check -r all` repairs it")
    }
    guard header.extensionOffset == 0 else {
      throw refuse("writing Parallels images with a format extension (dirty bitmaps) is not supported")
    }
    let clusterSize = header.clusterSize
    guard clusterSize & (clusterSize - 1) == 0 else {
      throw refuse(
        "writing Parallels images whose cluster size (\(clusterSize) bytes) is not a power of two is not supported"
      )
    }
    guard UInt64(header.batEntries) * clusterSize >= header.virtualSize else {
      throw refuse(
        "the Parallels BAT of \(header.batEntries) clusters covers less than the disk (\(header.virtualSize) bytes)"
      )
    }
    let dataStart = header.dataOffset
    guard dataStart >= header.batEnd, dataStart <= file.size else {
      throw refuse(
        "the Parallels data area starts at \(hex(dataStart)), inside the BAT (which ends at \(hex(header.batEnd))) or past end of file"
      )
    }
    let slots = (file.size - dataStart) / clusterSize + 1
    guard slots <= maxSlots else {
      throw refuse("the Parallels image has more than \(maxSlots) clusters to check")
    }
    var seen = [UInt64](repeating: 0, count: Int((slots + 63) / 64))
    var dataEnd = dataStart
    var index = 0
    let count = Int(header.batEntries)
    let unit = header.entryUnit * 512
    while index < count {
      let n = min(chunkEntries, count - index)
      let entries = try file.readTable(
        of: UInt32.self, at: UInt64(ParallelsHeader.size) + UInt64(index) * 4, count: n, order: .littleEndian,
        what: "Parallels BAT")
      for (i, entry) in entries.enumerated() where entry != 0 {
        let cluster = index + i
        let host = UInt64(entry) * unit
        guard host >= dataStart, (host - dataStart) % clusterSize == 0 else {
          throw refuse(
            "Parallels cluster \(cluster) at \(hex(host)) lies before the data area (\(hex(dataStart))) or off its cluster boundaries"
          )
        }
        guard host + clusterSize <= file.size else {
          throw refuse(
            "Parallels cluster \(cluster) at \(hex(host)) lies beyond end of file (size \(hex(file.size)))")
        }
        let slot = (host - dataStart) / clusterSize
        let (word, bit) = (Int(slot / 64), UInt64(1) << (slot % 64))
        guard seen[word] & bit == 0 else {
          throw refuse("Parallels cluster \(cluster) at \(hex(host)) is named by an earlier BAT entry too")
        }
        seen[word] |= bit
        dataEnd = max(dataEnd, host + clusterSize)
      }
      index += n
    }
    return dataEnd
  }
}
