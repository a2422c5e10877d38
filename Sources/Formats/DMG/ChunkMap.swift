import VDiskCore

/// Every chunk of every partition of a DMG (the `mish` tables of the property list, or of the
/// resource fork when there is no list), sorted by guest sector and checked not to overlap;
/// sectors no chunk covers read as zeros.
public struct ChunkMap: Sendable {
  /// The most chunks held in memory (a 1 TiB disk of 1 MiB chunks has a million; the property
  /// list's 16 MiB cap allows about 300,000).
  static let maxChunks = 1 << 20

  public let chunks: [Chunk]
  /// How many partitions (blkx entries) the image has.
  public let partitions: Int
  /// The largest decoded size of a compressed chunk (0 when there is none).
  public let largestCompressed: Int

  init(file: ImageFile, trailer: KolyTrailer) throws {
    let path = file.path
    let tables: [[UInt8]]
    if trailer.usesResourceFork {
      tables = try ResourceFork.blkxTables(file: file, trailer: trailer)
    } else {
      let xml = try file.readBytes(
        at: trailer.xmlOffset, count: Int(trailer.xmlLength), what: "DMG property list")
      tables = try PropertyList.blkxTables(xml, path: path)
    }
    var all: [Chunk] = []
    for (i, table) in tables.enumerated() {
      all += try BlockTable.chunks(table, index: i, trailer: trailer, path: path)
      guard all.count <= Self.maxChunks else {
        throw VDiskError.corrupt(path, "DMG has more than \(Self.maxChunks) chunks")
      }
    }
    all.sort { $0.sector < $1.sector }
    var largest = 0
    for i in all.indices {
      if i > 0, all[i - 1].end > all[i].sector {
        throw VDiskError.corrupt(
          path,
          "DMG chunks overlap: sectors \(all[i - 1].sector)–\(all[i - 1].end - 1) and \(all[i].sector)–\(all[i].end - 1)"
        )
      }
      if all[i].kind != .zero, all[i].kind != .raw { largest = max(largest, Int(all[i].sectorCount) * 512) }
    }
    chunks = all
    partitions = tables.count
    largestCompressed = largest
  }

  /// The index of the chunk holding `sector`, or of the first chunk after it (`chunks.count`
  /// when none is), and whether it holds it.
  func find(_ sector: UInt64) -> (index: Int, inside: Bool) {
    var low = 0
    var high = chunks.count
    while low < high {
      let mid = (low + high) / 2
      if chunks[mid].end <= sector { low = mid + 1 } else { high = mid }
    }
    return (low, low < chunks.count && chunks[low].sector <= sector)
  }
}
