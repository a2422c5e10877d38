import VDiskCore

/// One grain of a prepared write: where its bytes go, and (for a new grain) which grain table
/// slot to link at commit.
struct PlannedGrain: Sendable {
  /// Byte offset of the grain in its extent (guest bytes from the extent's start).
  var start: UInt64
  /// Host byte offset of the grain in the extent file.
  var host: UInt64
  /// A grain allocated for this write (filled, then linked at commit), or one written in place.
  var isNew: Bool
  var table: Int
  var slot: Int
}

/// Everything the writer of one hosted sparse extent changes, guarded by its
/// `SparseExtentWriter`'s mutex: the grain directory (mirrored into `live` for readers), the
/// redundant directory, the allocation cursor, and which grain tables and directory entries are
/// dirty (the tables' entries live in the chain's `MetadataCache`, dirty ones counted against its
/// budget and never evicted). Metadata is only changed here; data I/O never happens under the
/// mutex and readers never take it.
struct SparseWriteState {
  let file: ImageFile
  let cache: MetadataCache
  let layout: SparseWriteLayout
  let live: ActiveGrainDirectory
  /// Bytes of guest data the extent covers (grains past it are never touched).
  let capacity: UInt64
  var gd: [UInt32]
  var rgd: [UInt32]?
  /// Where the next allocation goes (bytes; everything from here on is free).
  var nextFree: UInt64
  /// GD indices whose grain tables changed and are not yet written.
  var dirtyTables: Set<Int> = []
  /// GD indices whose directory entries (and redundant ones) changed and are not yet written.
  var dirtyDirectory: Set<Int> = []
  /// GD indices whose tables passed `checkTable` (or were made here).
  var checkedTables: Set<Int> = []

  init(
    file: ImageFile, cache: MetadataCache, layout: SparseWriteLayout, live: ActiveGrainDirectory,
    capacity: UInt64
  ) {
    self.file = file
    self.cache = cache
    self.layout = layout
    self.live = live
    self.capacity = capacity
    gd = layout.gd
    rgd = layout.rgd
    nextFree = (layout.sizeAtOpen + 511) / 512 * 512
  }

  var hasDirtyMetadata: Bool { !dirtyTables.isEmpty || !dirtyDirectory.isEmpty }

  func key(_ offset: UInt64) -> TableKey { TableKey(file: file, offset: offset) }
  var tableCost: Int { layout.tableEntries * 8 }

  /// Whether GD entry `index` names no table (unallocated, or a zeroed table).
  func hasNoTable(_ index: Int) -> Bool {
    gd[index] == 0 || (gd[index] == 1 && layout.zeroedGrains)
  }

  /// What a grain of table `index` reads as when the table does not exist: 0 (unallocated) or
  /// 1 (zeroed-grain entry).
  func emptyEntry(_ index: Int) -> UInt64 { gd[index] == 1 ? 1 : 0 }

  /// Reserves `bytes` at the end of the file, `align`-aligned (a power of two).
  mutating func allocate(_ bytes: UInt64, align: UInt64) throws -> UInt64 {
    let start = (nextFree + align - 1) & ~(align - 1)
    guard start + bytes <= SparseWriteLayout.maxFileSize else {
      throw VDiskError(
        .noSpace, path: file.path,
        "the sparse extent is full: grain sectors are 32-bit, so it cannot grow past \(hex(SparseWriteLayout.maxFileSize)) bytes"
      )
    }
    nextFree = start + bytes
    return start
  }

  /// The entries of grain table `index` (which exists), checked on first use by the writer.
  mutating func table(_ index: Int) throws -> [UInt64] {
    let offset = UInt64(gd[index]) * 512
    let count = layout.tableEntries
    let words = try cache.value(for: key(offset), cost: tableCost) {
      try file.readTable(
        of: UInt32.self, at: offset, count: count, order: .littleEndian,
        what: "grain table (GD entry \(index))"
      ).map(UInt64.init)
    }
    guard words.count == count else {
      throw VDiskError.corrupt(file.path, at: offset, "grain table at \(hex(offset)) overlaps other metadata")
    }
    if !checkedTables.contains(index) {
      try checkTable(words, index: index, at: offset)
      checkedTables.insert(index)
    }
    return words
  }

  /// Refuses to write through a table whose grains a writer could not trust: each grain inside
  /// the extent must lie in the file as it was opened (new grains go after it) and overlap no
  /// metadata, so that writing it in place never lands on a table, a directory or a new grain.
  private func checkTable(_ words: [UInt64], index: Int, at offset: UInt64) throws {
    let grainSize = layout.grainSize
    for (slot, entry) in words.enumerated() {
      if entry == 0 || (entry == 1 && layout.zeroedGrains) { continue }
      let guest = (UInt64(index) * UInt64(layout.tableEntries) + UInt64(slot)) * grainSize
      guard guest < capacity else { break }
      let host = entry * 512
      let length = min(grainSize, capacity - guest)
      guard host + length <= layout.sizeAtOpen, !layout.overlapsMetadata(host..<host + length) else {
        throw VDiskError.corrupt(
          file.path, at: offset + UInt64(slot) * 4,
          "refusing to write: grain table entry \(slot) (GD entry \(index)) points at sector \(entry), which lies past the end of the file or on metadata"
        )
      }
    }
  }

  /// Makes sure table `index` exists: a directory entry naming none gets a new table (and a new
  /// redundant one), allocated at the end of the file, filled with what the entry meant (all
  /// unallocated, or all zeroed grains) and linked at once: an empty table means what the empty
  /// entry meant, so readers see no change. Its contents reach the file before its directory
  /// entries (`writeBack`).
  mutating func ensureTable(_ index: Int) throws {
    guard hasNoTable(index) else { return }
    let fill = emptyEntry(index)
    let bytes = (layout.tableBytes + 511) / 512 * 512
    let primary = try allocate(bytes, align: 512)
    if rgd != nil {
      let redundant = try allocate(bytes, align: 512)
      rgd?[index] = UInt32(redundant / 512)
    }
    gd[index] = UInt32(primary / 512)
    cache.insert(
      key(primary), [UInt64](repeating: fill, count: layout.tableEntries), cost: tableCost, dirty: true)
    live.set(index, gd[index])
    dirtyTables.insert(index)
    dirtyDirectory.insert(index)
    checkedTables.insert(index)
  }

  /// Plans the grains of extent bytes `[from, to)`: grains stored already are written in place;
  /// the others (unallocated, zeroed) get a new grain at the end of the file, linked at commit.
  mutating func planGrains(from: UInt64, to: UInt64) throws -> [PlannedGrain] {
    let grainSize = layout.grainSize
    let perTable = UInt64(layout.tableEntries)
    // Keep new grains page-aligned in the file (and grain-aligned when grains are smaller).
    let align = min(grainSize, 4096)
    var grains: [PlannedGrain] = []
    var grain = from / grainSize
    while grain * grainSize < to {
      let index = Int(grain / perTable)
      let slot = Int(grain % perTable)
      guard index < gd.count else {
        throw VDiskError.corrupt(file.path, "grain directory has no entry \(index)")
      }
      try ensureTable(index)
      let entry = try table(index)[slot]
      if entry == 0 || (entry == 1 && layout.zeroedGrains) {
        let host = try allocate(grainSize, align: align)
        grains.append(
          PlannedGrain(start: grain * grainSize, host: host, isNew: true, table: index, slot: slot))
      } else {
        grains.append(
          PlannedGrain(start: grain * grainSize, host: entry * 512, isNew: false, table: index, slot: slot))
      }
      grain += 1
    }
    return grains
  }

  /// Links the new grains of a prepared write (their data is written): one table update each.
  mutating func link(_ grains: [PlannedGrain]) throws {
    try setEntries(grains.filter(\.isNew).map { (table: $0.table, slot: $0.slot, value: $0.host / 512) })
  }

  /// Sets grain table entries (table, slot, value), one copy of each table touched.
  mutating func setEntries(_ changes: [(table: Int, slot: Int, value: UInt64)]) throws {
    var i = 0
    while i < changes.count {
      let index = changes[i].table
      try ensureTable(index)
      var words = try table(index)
      while i < changes.count, changes[i].table == index {
        words[changes[i].slot] = changes[i].value
        i += 1
      }
      cache.insert(key(UInt64(gd[index]) * 512), words, cost: tableCost, dirty: true)
      dirtyTables.insert(index)
    }
  }

  /// Makes whole grains of extent bytes `[from, to)` (grain-aligned; `to` may be the extent's
  /// end) read as zeros where the format can say so: zeroed-grain entries when allowed, else
  /// nothing to do for grains that already read as zeros. Returns the extent ranges left for the
  /// engine to overwrite with zeros.
  mutating func zeroGrains(from: UInt64, to: UInt64, hasBacking: Bool) throws -> [Range<UInt64>] {
    let grainSize = layout.grainSize
    let perTable = UInt64(layout.tableEntries)
    var leftovers: [Range<UInt64>] = []
    var changes: [(table: Int, slot: Int, value: UInt64)] = []
    var grain = from / grainSize
    while grain * grainSize < to {
      let index = Int(grain / perTable)
      guard index < gd.count else { break }
      if hasNoTable(index), !hasBacking || emptyEntry(index) == 1 {
        // The whole table already reads as zeros.
        grain = (grain / perTable + 1) * perTable
        continue
      }
      let slot = Int(grain % perTable)
      let entry = try hasNoTable(index) ? emptyEntry(index) : table(index)[slot]
      let readsZero = (entry == 1 && layout.zeroedGrains) || (entry == 0 && !hasBacking)
      if !readsZero {
        if layout.writesZeroedGrains {
          // The old grain stays in the file, unreferenced (no format without reference counts
          // can reuse it; QEMU leaves it too).
          changes.append((table: index, slot: slot, value: 1))
        } else {
          let start = grain * grainSize
          leftovers.append(start..<min(start + grainSize, to))
        }
      }
      grain += 1
    }
    try setEntries(changes)
    return leftovers
  }
}
