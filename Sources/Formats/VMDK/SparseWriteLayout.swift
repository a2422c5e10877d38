import VDiskCore

/// What a writer of a hosted sparse extent ("KDMV") relies on, checked once when the extent is
/// opened for writing: the grain directory, the redundant one, and every grain table they name
/// lie inside the file and overlap neither each other nor the header or the embedded descriptor,
/// and the two directories agree on which tables exist. A hostile image fails here with
/// `.readOnly` (the mount goes read-only with one notice) instead of being corrupted further.
struct SparseWriteLayout: Sendable {
  /// Grains larger than this are refused for writing (a new grain's fill is read into memory
  /// whole; VMware and QEMU use 64 KiB).
  static let maxWriteGrainSize: UInt64 = 16 << 20
  /// Grain and table sectors are 32-bit (vmdk spec, "Grain directory", "Grain table"): nothing
  /// can be allocated past 2^32 sectors.
  static let maxFileSize: UInt64 = (1 << 32) * 512
  /// "Use secondary grain directory" (vmdk spec, "Flags"). QEMU sets it on every image it makes
  /// and, like VMware, keeps the redundant directory and tables in step with the primary ones.
  static let flagRedundantDirectory: UInt32 = 0x2

  let grainSize: UInt64
  let tableEntries: Int
  /// Bytes of one grain table (4 bytes an entry).
  var tableBytes: UInt64 { UInt64(tableEntries) * 4 }
  /// Byte offsets of the grain directory and of the redundant one (nil: none to keep).
  let gdOffset: UInt64
  let rgdOffset: UInt64?
  /// The entries of both directories as read at open.
  let gd: [UInt32]
  let rgd: [UInt32]?
  /// A GT entry (and a GD entry) of 1 reads as zeros (vmdk spec, "Grain table").
  let zeroedGrains: Bool
  /// Whether discards may write zeroed-grain entries: the flag is set and the header is version
  /// 2 or later ("As of VMDK sparse extent data file version 2 if the 'use zeroed-grain table
  /// entry' flag is set…"); QEMU writes them only with the flag too.
  let writesZeroedGrains: Bool
  /// Byte offset of the first byte at or after the end of the file when opened: grains in the
  /// file before writing lie below it, everything allocated lies at or above it.
  let sizeAtOpen: UInt64
  /// Every metadata region (header, embedded descriptor, both directories, every grain table),
  /// sorted and disjoint: no grain may overlap one.
  let regions: [Range<UInt64>]

  init(file: ImageFile, header h: SparseExtentHeader) throws {
    let path = file.path
    func refuse(_ why: String) -> VDiskError {
      VDiskError(.readOnly, path: path, "refusing to write this sparse extent: \(why)")
    }
    guard !h.isCompressed, !h.hasMarkers, !h.fromFooter else {
      throw VDiskError(
        .readOnly, path: path,
        "stream-optimized (compressed) vmdk extents are read-only in vdiskfs (convert with qemu-img convert -O vmdk to write)"
      )
    }
    guard h.grainSize <= Self.maxWriteGrainSize else {
      throw refuse("grain size \(h.grainSize) is larger than \(Self.maxWriteGrainSize)")
    }
    grainSize = h.grainSize
    tableEntries = Int(h.gtesPerGT)
    zeroedGrains = h.usesZeroedGrains
    writesZeroedGrains = h.usesZeroedGrains && h.version >= 2
    sizeAtOpen = file.size
    let entries = Int(h.gdEntries)
    let directoryBytes = UInt64(entries) * 4
    guard entries > 0 else { throw refuse("it has no grain directory") }
    let gdOffset = h.gdOffset * 512
    self.gdOffset = gdOffset
    let primaryEntries = try file.readTable(
      of: UInt32.self, at: gdOffset, count: entries, order: .littleEndian, what: "grain directory")
    gd = primaryEntries
    let redundantEntries: [UInt32]?

    var regions: [(range: Range<UInt64>, what: String)] = [(0..<512, "the header")]
    if h.descriptorSectors > 0 {
      let start = h.descriptorOffset * 512
      regions.append((start..<start + h.descriptorSectors * 512, "the embedded descriptor"))
    }
    regions.append((gdOffset..<gdOffset + directoryBytes, "the grain directory"))
    if h.flags & Self.flagRedundantDirectory != 0 {
      let offset = h.redundantGDOffset
      guard offset > 0, offset <= file.size / 512, offset * 512 + directoryBytes <= file.size else {
        throw refuse(
          "the redundant grain directory at sector \(offset) (\(entries) entries) lies outside the file")
      }
      redundantEntries = try file.readTable(
        of: UInt32.self, at: offset * 512, count: entries, order: .littleEndian,
        what: "redundant grain directory")
      rgdOffset = offset * 512
      regions.append((offset * 512..<offset * 512 + directoryBytes, "the redundant grain directory"))
    } else {
      redundantEntries = nil
      rgdOffset = nil
    }
    rgd = redundantEntries
    let tableBytes = UInt64(h.gtesPerGT) * 4
    func table(_ sector: UInt32, _ index: Int, _ which: String) throws -> (range: Range<UInt64>, what: String)
    {
      let start = UInt64(sector) * 512
      guard start + tableBytes <= file.size else {
        throw refuse("\(which) grain table of GD entry \(index) (sector \(sector)) lies outside the file")
      }
      return (start..<start + tableBytes, "\(which) grain table of GD entry \(index)")
    }
    let isEmpty: (UInt32) -> Bool = { $0 == 0 || ($0 == 1 && h.usesZeroedGrains) }
    for index in 0..<entries {
      let primary = primaryEntries[index]
      if let redundant = redundantEntries?[index], isEmpty(primary) || isEmpty(redundant),
        primary != redundant
      {
        throw refuse(
          "GD entry \(index) is \(primary) but the redundant GD entry is \(redundant) (the directories disagree)"
        )
      }
      if isEmpty(primary) { continue }
      regions.append(try table(primary, index, "the"))
      if let redundant = redundantEntries?[index] {
        regions.append(try table(redundant, index, "the redundant"))
      }
    }
    regions.sort { $0.range.lowerBound < $1.range.lowerBound }
    for i in regions.indices.dropFirst() where regions[i].range.lowerBound < regions[i - 1].range.upperBound {
      throw refuse(
        "\(regions[i].what) at \(hex(regions[i].range.lowerBound)) overlaps \(regions[i - 1].what) at \(hex(regions[i - 1].range.lowerBound))"
      )
    }
    self.regions = regions.map(\.range)
  }

  /// Whether `range` (host bytes) overlaps a metadata region.
  func overlapsMetadata(_ range: Range<UInt64>) -> Bool {
    // The last region starting before `range.upperBound` is the only one that can overlap
    // (regions are disjoint and sorted).
    var low = 0
    var high = regions.count
    while low < high {
      let mid = (low + high) / 2
      if regions[mid].lowerBound < range.upperBound { low = mid + 1 } else { high = mid }
    }
    return low > 0 && regions[low - 1].upperBound > range.lowerBound
  }
}
