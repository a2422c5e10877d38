import VDiskCore

/// One grain table as a run sees it: its entries, or one piece for all of it (a grain-directory
/// entry that says the whole table is unallocated or zero).
enum GrainTable {
  case whole(GrainPiece)
  case entries([UInt64])
}

/// The two-level grain mapping that hosted sparse, COWD and seSparse extents share: a grain
/// directory of grain tables, each of `tableEntries` grains of `grainSize` bytes. Each kind says
/// how to fetch a table and what one entry means; `run(at:maxLength:)` walks them.
protocol GrainTables {
  var file: ImageFile { get }
  /// Bytes of guest data the extent covers.
  var capacity: UInt64 { get }
  var grainBytes: UInt64 { get }
  var entriesPerTable: Int { get }
  /// The grain table of directory entry `index` (bounds-checked by the implementation).
  func grainTable(_ index: UInt64) throws -> GrainTable
  /// What entry `entry` (slot `slot` of table `index`) says about the start of its grain.
  func grain(_ entry: UInt64, slot: Int, table index: UInt64) throws -> GrainPiece
}

/// Grain tables one run looks at, at most: bounds the work of one answer whatever the directory
/// says (the contract of `extent(at:maxLength:)` allows a shorter run).
let maxGrainTablesPerRun = 64

extension GrainTables {
  /// The longest run from `offset` (bytes into the extent, `< capacity`) of at most `maxLength`
  /// bytes with one kind of mapping, host-contiguous for data; a compressed run is one grain (or
  /// its part from `offset`). Reads no more grain tables than the run spans.
  func run(at offset: UInt64, maxLength: UInt64) throws -> (length: UInt64, piece: GrainPiece) {
    let tableCoverage = UInt64(entriesPerTable) * grainBytes
    let end = offset + min(maxLength, capacity - offset)
    var position = offset
    var run = RunAccumulator<GrainPiece>()
    var tablesRead = 0
    while position < end, tablesRead < maxGrainTablesPerRun {
      tablesRead += 1
      let index = position / tableCoverage
      let tableEnd = min(end, (index + 1) * tableCoverage)
      let entries: [UInt64]
      switch try grainTable(index) {
      case .whole(let piece):
        guard run.extend(piece, tableEnd - position) else { return (run.length, run.first ?? piece) }
        position = tableEnd
        continue
      case .entries(let table): entries = table
      }
      while position < tableEnd {
        let grainStart = position / grainBytes * grainBytes
        let pieceEnd = min(tableEnd, grainStart + grainBytes)
        let slot = Int((position / grainBytes) % UInt64(entriesPerTable))
        guard slot < entries.count else {
          throw VDiskError.corrupt(
            file.path, "grain table \(index) has \(entries.count) entries, not \(entriesPerTable)")
        }
        let piece = try grain(entries[slot], slot: slot, table: index) + (position - grainStart)
        if case .compressed = piece {
          guard run.first == nil else { return (run.length, run.first ?? piece) }
          return (pieceEnd - position, piece)
        }
        guard run.extend(piece, pieceEnd - position) else { return (run.length, run.first ?? piece) }
        position = pieceEnd
      }
    }
    return (run.length, run.first ?? .unallocated)
  }
}

extension GrainPiece {
  /// The piece `delta` bytes further into its grain (only raw data moves; a compressed grain is
  /// named by its start).
  static func + (piece: GrainPiece, delta: UInt64) -> GrainPiece {
    if case .data(let host) = piece { return .data(host + delta) }
    return piece
  }
}
