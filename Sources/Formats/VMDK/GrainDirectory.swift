import VDiskCore

/// What one extent says about a run of its own sectors.
enum GrainPiece: Sendable, Equatable, RunPiece {
  case unallocated
  case zero
  /// Stored raw at this host offset of the extent's file.
  case data(UInt64)
  /// A compressed grain stored at this host offset (its marker, when the extent has markers).
  case compressed(UInt64)

  var rawHostOffset: UInt64? {
    if case .data(let host) = self { return host }
    return nil
  }

  var mergesWhenEqual: Bool { self == .zero || self == .unallocated }
}

/// The two-level grain mapping of hosted sparse ("KDMV") and ESX sparse ("COWD") extents: a
/// grain directory of 32-bit grain-table sector numbers, kept in memory, and grain tables of
/// 32-bit grain sector numbers, kept in the chain's shared `MetadataCache` (vmdk spec, "Grain
/// directory", "Grain table").
struct GrainDirectory: Sendable {
  let file: ImageFile
  /// GD entries: sector numbers of grain tables, 0 = not allocated. Of a writable extent, the
  /// entries as read at open; `live` then holds the current ones.
  let directory: [UInt32]
  /// The directory as a writer keeps it (new grain tables), for readers of a writable extent.
  let live: ActiveGrainDirectory?
  let tableEntries: Int
  let grainSize: UInt64
  /// Bytes of guest data the extent covers (the last grain table may reach past it: vmdk spec,
  /// "Corruption scenarios").
  let capacity: UInt64
  /// "a sector number of 1 indicates the grain data is sparse" when the zeroed-grain flag is
  /// set (vmdk spec, "Grain table").
  let zeroedGrains: Bool
  let compressed: Bool
  /// Compressed grains start with a grain marker (stream-optimized, flag "Has metadata").
  let hasMarkers: Bool
  let cache: MetadataCache

  /// Reads the grain directory of `entries` 32-bit entries at byte `offset`; the caller checked
  /// it lies within the file and that `entries` is bounded.
  init(
    file: ImageFile, directoryOffset offset: UInt64, entries: Int, tableEntries: Int, grainSize: UInt64,
    capacity: UInt64, zeroedGrains: Bool, compressed: Bool, hasMarkers: Bool = false, cache: MetadataCache,
    writable: Bool = false
  ) throws {
    self.file = file
    self.tableEntries = tableEntries
    self.grainSize = grainSize
    self.capacity = capacity
    self.zeroedGrains = zeroedGrains
    self.compressed = compressed
    self.hasMarkers = hasMarkers
    self.cache = cache
    guard entries > 0 else {
      directory = []
      live = writable ? ActiveGrainDirectory([]) : nil
      return
    }
    directory = try file.readTable(
      of: UInt32.self, at: offset, count: entries, order: .littleEndian, what: "grain directory")
    live = writable ? ActiveGrainDirectory(directory) : nil
  }

  /// GD entry `index` as readers see it now (nil past the directory).
  func directoryEntry(_ index: Int) -> UInt32? {
    guard index >= 0, index < directory.count else { return nil }
    return live?.entry(index) ?? directory[index]
  }

  /// Bytes of grain tables covering the whole extent (for the cache budget).
  var metadataCoverage: UInt64 { UInt64(directory.count) * UInt64(tableEntries) * 8 }

  /// The grain table for GD index `index` (entries widened to 64 bits), or the whole table's
  /// meaning when the GD entry says it has none.
  private func table(_ index: Int) throws -> (piece: GrainPiece?, entries: [UInt64]) {
    guard let entry = directoryEntry(index) else {
      throw VDiskError.corrupt(file.path, "grain directory has no entry \(index)")
    }
    let sector = UInt64(entry)
    if sector == 0 { return (.unallocated, []) }
    if sector == 1, zeroedGrains { return (.zero, []) }
    let offset = sector * 512
    let count = tableEntries
    let entries = try cache.value(for: TableKey(file: file, offset: offset), cost: count * 8) {
      try file.readTable(
        of: UInt32.self, at: offset, count: count, order: .littleEndian,
        what: "grain table (GD entry \(index))"
      ).map(UInt64.init)
    }
    guard entries.count == count else {
      throw VDiskError.corrupt(file.path, at: offset, "grain table at \(hex(offset)) overlaps other metadata")
    }
    return (nil, entries)
  }
}

extension GrainDirectory: GrainTables {
  var grainBytes: UInt64 { grainSize }
  var entriesPerTable: Int { tableEntries }

  func grainTable(_ index: UInt64) throws -> GrainTable {
    let table = try table(Int(index))
    if let whole = table.piece { return .whole(whole) }
    return .entries(table.entries)
  }

  /// vmdk spec, "Grain table": 0 is unallocated, 1 a zero grain when the zeroed-grain flag is
  /// set; anything else is the grain's sector.
  func grain(_ entry: UInt64, slot: Int, table index: UInt64) throws -> GrainPiece {
    switch entry {
    case 0: return .unallocated
    case 1 where zeroedGrains: return .zero
    default:
      let host = entry * 512
      guard host < file.size else {
        throw VDiskError.corrupt(
          file.path, at: UInt64(directoryEntry(Int(index)) ?? 0) * 512 + UInt64(slot) * 4,
          "grain table entry \(slot) (GD entry \(index)) points at sector \(entry), past the end of the file")
      }
      return compressed ? .compressed(host) : .data(host)
    }
  }
}

/// The grain directory of a writable sparse extent as readers see it: the writer's entries,
/// mirrored here whenever it links a new grain table. A lookup takes a shared lock for one array
/// read; readers never take the writer's lock.
///
/// `@unchecked Sendable`: `entries` is only touched under `lock`.
final class ActiveGrainDirectory: @unchecked Sendable {
  private let lock = ReadWriteLock()
  private var entries: [UInt32]

  init(_ entries: [UInt32]) {
    self.entries = entries
  }

  /// Entry `index` (0 past the end).
  func entry(_ index: Int) -> UInt32 {
    lock.withReadLock { index < entries.count ? entries[index] : 0 }
  }

  func set(_ index: Int, _ value: UInt32) {
    lock.withWriteLock { if index < entries.count { entries[index] = value } }
  }
}
