import VDiskCore

/// The 2048-byte header of an ESX Server sparse extent, magic "COWD" (vmdk spec, "The COWD
/// sparse extent data file"). Only the mapping fields matter to a reader.
struct COWDHeader: Sendable {
  static let magic: [UInt8] = Array("COWD".utf8)
  static let size = 2048
  /// "The number of entries in a grain table is the fixed value of 4096."
  static let tableEntries = 4096
  /// Grain directory entries kept in memory (4 bytes each).
  static let maxGDEntries: UInt32 = 1 << 24

  /// Sectors the extent covers.
  var capacity: UInt64
  var grainSectors: UInt64
  /// Sector of the grain directory.
  var gdOffset: UInt64
  var gdEntries: Int

  var grainSize: UInt64 { grainSectors * 512 }

  init(file: ImageFile) throws {
    let path = file.path
    let bytes = try file.readBytes(at: 0, count: Self.size, what: "COWD header")
    let r = ByteReader(bytes, path: path)
    guard Array(try r.bytes(0, count: 4)) == Self.magic else {
      throw VDiskError.corrupt(path, at: 0, "no COWD sparse extent magic \"COWD\"")
    }
    let version = try r.u32le(4)
    guard version == 1 else {
      throw VDiskError.unsupported(path, "COWD sparse extent version \(version) (only 1 is known)")
    }
    capacity = UInt64(try r.u32le(12))
    grainSectors = UInt64(try r.u32le(16))
    gdOffset = UInt64(try r.u32le(20))
    let entries = try r.u32le(24)
    guard grainSectors > 0, grainSectors <= SparseExtentHeader.maxGrainSectors,
      grainSectors & (grainSectors - 1) == 0
    else {
      throw VDiskError.corrupt(
        path, at: 16,
        "COWD grain size of \(grainSectors) sectors is not a power of two between 1 and 0x200000")
    }
    guard entries <= Self.maxGDEntries else {
      throw VDiskError.corrupt(path, at: 24, "COWD grain directory of \(entries) entries is too large")
    }
    gdEntries = Int(entries)
    // The directory must cover the capacity: each entry maps 4096 grains.
    let coverage = UInt64(entries) * UInt64(Self.tableEntries) * grainSectors
    guard coverage >= capacity else {
      throw VDiskError.corrupt(
        path, at: 24,
        "COWD grain directory of \(entries) entries covers \(coverage) sectors, less than the capacity of \(capacity)"
      )
    }
    guard gdEntries == 0 || (gdOffset >= 4 && gdOffset * 512 + UInt64(entries) * 4 <= file.size) else {
      throw VDiskError.corrupt(
        path, at: 20,
        "COWD grain directory at sector \(gdOffset) (\(entries) entries) lies outside the file (size \(hex(file.size)))"
      )
    }
  }

  /// The grain mapping of this extent (COWD has no zeroed-grain entries and no compression).
  func directory(file: ImageFile, cache: MetadataCache) throws -> GrainDirectory {
    try GrainDirectory(
      file: file, directoryOffset: gdOffset * 512, entries: gdEntries, tableEntries: Self.tableEntries,
      grainSize: grainSize, capacity: capacity * 512, zeroedGrains: false, compressed: false, cache: cache)
  }
}
