import VDiskCore

/// An ESXi space-efficient sparse extent (seSparse), read-only. VMware never published the
/// format; these are the rules of vmdk-sesparse-notes.md (QEMU's "strict checks").
struct SESparseExtent: Sendable, GrainTables {
  static let constantMagic: UInt64 = 0xCAFE_BABE
  static let volatileMagic: UInt64 = 0xCAFE_CAFE
  /// Version 2.1, the only one QEMU accepts.
  static let version: UInt64 = 0x0000_0002_0000_0001
  /// 4 KiB grains and 4096-entry grain tables, the only geometry QEMU accepts.
  static let grainSectors: UInt64 = 8
  static let tableSectors: UInt64 = 64
  static let grainSize: UInt64 = 4096
  static let tableEntries = 4096
  static let maxGDEntries: UInt64 = 1 << 24

  let file: ImageFile
  /// Bytes the extent covers.
  let capacity: UInt64
  /// Byte offsets of the grain directory, grain table pool and grain pool.
  let gdOffset: UInt64
  let gdEntries: UInt64
  let tablesOffset: UInt64
  let tablesSize: UInt64
  let grainsOffset: UInt64
  /// Bytes of the grain pool as the header declares it (may reach far past the end of the file).
  let grainsSize: UInt64
  let cache: MetadataCache
  /// Bound on the grain pool's declared offset and size, in sectors (2^56 bytes each, so their
  /// sum cannot overflow).
  static let maxPoolSectors: UInt64 = VMDKDescriptor.maxVirtualSize / 512

  init(file: ImageFile, cache: MetadataCache) throws {
    let path = file.path
    self.file = file
    self.cache = cache
    let r = ByteReader(try file.readBytes(at: 0, count: 512, what: "seSparse header"), path: path)
    guard try r.u64le(0) == Self.constantMagic else {
      throw VDiskError.corrupt(path, at: 0, "no seSparse magic 0xcafebabe")
    }
    let version = try r.u64le(8)
    guard version == Self.version else {
      throw VDiskError.unsupported(path, "seSparse version \(hex(version)) (only 2.1 is known)")
    }
    let capacitySectors = try r.u64le(16)
    guard try r.u64le(24) == Self.grainSectors, try r.u64le(32) == Self.tableSectors else {
      throw VDiskError.unsupported(
        path, "seSparse geometry other than 4 KiB grains and 4096-entry grain tables")
    }
    guard try r.u64le(40) == 0, try (48..<80).allSatisfy({ try r.u8($0) == 0 }),
      try (208..<512).allSatisfy({ try r.u8($0) == 0 })
    else {
      throw VDiskError.unsupported(path, "seSparse header has flags or reserved fields set")
    }
    guard capacitySectors <= VMDKDescriptor.maxVirtualSize / 512 else {
      throw VDiskError.corrupt(path, at: 16, "seSparse capacity of \(capacitySectors) sectors is absurd")
    }
    capacity = capacitySectors * 512

    // Every region is given in sectors; each must lie within the file.
    func region(_ at: Int, _ name: String) throws -> (offset: UInt64, size: UInt64) {
      let offset = try r.u64le(at)
      let size = try r.u64le(at + 8)
      guard offset <= file.size / 512, size <= file.size / 512, (offset + size) * 512 <= file.size else {
        throw VDiskError.corrupt(
          path, at: UInt64(at), "seSparse \(name) at sector \(offset) (\(size) sectors) lies outside the file"
        )
      }
      return (offset * 512, size * 512)
    }
    let volatile = try region(80, "volatile header")
    let gd = try region(128, "grain directory")
    let tables = try region(144, "grain table pool")
    // ESXi declares the grain pool at its full size while the file holds only the grains
    // allocated so far (QEMU reads such extents): the pool is only bounded here, and every grain
    // a table entry references is checked against the file when it is decoded (`grain`).
    let grainsField = (offset: try r.u64le(192), size: try r.u64le(200))
    guard grainsField.offset <= Self.maxPoolSectors, grainsField.size <= Self.maxPoolSectors else {
      throw VDiskError.corrupt(
        path, at: 192,
        "seSparse grain pool at sector \(grainsField.offset) (\(grainsField.size) sectors) is absurdly large")
    }
    let grains = (offset: grainsField.offset * 512, size: grainsField.size * 512)
    guard volatile.size >= 512 else {
      throw VDiskError.corrupt(path, at: 88, "seSparse volatile header is smaller than a sector")
    }
    let v = ByteReader(
      try file.readBytes(at: volatile.offset, count: 512, what: "seSparse volatile header"), path: path,
      baseOffset: volatile.offset)
    guard try v.u64le(0) == Self.volatileMagic else {
      throw VDiskError.corrupt(path, at: volatile.offset, "no seSparse volatile header magic 0xcafecafe")
    }
    guard try v.u64le(24) == 0 else {
      throw VDiskError.unsupported(
        path, "seSparse journal needs replaying (the image was not closed cleanly)")
    }
    gdOffset = gd.offset
    gdEntries = gd.size / 8
    tablesOffset = tables.offset
    tablesSize = tables.size
    grainsOffset = grains.offset
    grainsSize = grains.size
    let needed = (capacity + Self.tableCoverage - 1) / Self.tableCoverage
    guard gdEntries >= needed, needed <= Self.maxGDEntries else {
      throw VDiskError.corrupt(
        path, at: 136, "seSparse grain directory of \(gdEntries) entries cannot cover \(needed) grain tables")
    }
  }

  static var tableCoverage: UInt64 { UInt64(tableEntries) * grainSize }

  var metadataCoverage: UInt64 { (capacity + Self.tableCoverage - 1) / Self.tableCoverage * 32768 }

  /// One grain-directory entry; reads the directory sector that holds it through the cache.
  private func directoryEntry(_ index: UInt64) throws -> UInt64 {
    let sector = gdOffset + index * 8 / 512 * 512
    let words = try cache.value(for: TableKey(file: file, offset: sector), cost: 512) {
      try file.readTable(
        of: UInt64.self, at: sector, count: 64, order: .littleEndian, what: "seSparse grain directory")
    }
    guard words.count == 64 else {
      throw VDiskError.corrupt(file.path, at: sector, "seSparse grain directory overlaps a grain table")
    }
    return words[Int(index % 64)]
  }

  /// The grain table for GD index `index`, or nil when the GD entry is 0 (all unallocated).
  private func table(_ index: UInt64) throws -> [UInt64]? {
    let entry = try directoryEntry(index)
    if entry == 0 { return nil }
    // "the top nibble must be 0x1 … The low 32 bits are the index of the grain table in the GT
    // pool" (QEMU requires the upper 32 bits to be 0x10000000).
    guard entry >> 32 == 0x1000_0000 else {
      throw VDiskError.corrupt(
        file.path, at: gdOffset + index * 8,
        "seSparse grain directory entry \(index) is invalid (\(hex(entry)))")
    }
    let tableBytes = UInt64(Self.tableEntries) * 8
    let offset = tablesOffset + (entry & 0xffff_ffff) * tableBytes
    guard (entry & 0xffff_ffff) * tableBytes + tableBytes <= tablesSize else {
      throw VDiskError.corrupt(
        file.path, at: gdOffset + index * 8,
        "seSparse grain table \(entry & 0xffff_ffff) (GD entry \(index)) lies outside the grain table pool")
    }
    let table = try cache.value(for: TableKey(file: file, offset: offset), cost: Int(tableBytes)) {
      try file.readTable(
        of: UInt64.self, at: offset, count: Self.tableEntries, order: .littleEndian,
        what: "seSparse grain table")
    }
    guard table.count == Self.tableEntries else {
      throw VDiskError.corrupt(
        file.path, at: offset, "seSparse grain table at \(hex(offset)) overlaps the grain directory")
    }
    return table
  }

  var grainBytes: UInt64 { Self.grainSize }
  var entriesPerTable: Int { Self.tableEntries }

  func grainTable(_ index: UInt64) throws -> GrainTable {
    guard let entries = try table(index) else { return .whole(.unallocated) }
    return .entries(entries)
  }

  /// A grain-table entry: the top nibble is its type (vmdk-sesparse-notes.md, "Address
  /// translation"); allocated grain numbers have their low 12 bits in bits 48…59.
  func grain(_ entry: UInt64, slot: Int, table: UInt64) throws -> GrainPiece {
    switch entry >> 60 {
    case 0x0 where entry == 0: return .unallocated
    case 0x1, 0x2: return .zero  // unmapped (SCSI UNMAP) or zero grain
    case 0x3:
      let grain = ((entry & 0x0FFF_0000_0000_0000) >> 48) | ((entry & 0x0000_FFFF_FFFF_FFFF) << 12)
      let (scaled, overflow) = grain.multipliedReportingOverflow(by: Self.grainSize)
      // The grain must start inside the file (a last grain cut short by the end of the file
      // reads its missing tail as zeros, as QEMU's file driver does) and lie in the grain pool
      // the header declares.
      let (host, past) = grainsOffset.addingReportingOverflow(scaled)
      guard !overflow, !past, host < file.size else {
        throw VDiskError.corrupt(
          file.path,
          "seSparse grain table \(table) entry \(slot) points at grain \(grain), past the end of the file (size \(hex(file.size)))"
        )
      }
      guard scaled + Self.grainSize <= grainsSize else {
        throw VDiskError.corrupt(
          file.path,
          "seSparse grain table \(table) entry \(slot) points at grain \(grain), outside the grain pool of \(grainsSize / Self.grainSize) grains"
        )
      }
      return .data(grainsOffset + scaled)
    default:
      throw VDiskError.corrupt(
        file.path, "seSparse grain table \(table) entry \(slot) is invalid (\(hex(entry)))")
    }
  }
}
