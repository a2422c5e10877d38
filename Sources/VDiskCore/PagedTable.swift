/// A table of fixed-width unsigned integers in an image file (a BAT, a block map), read page by
/// page into the chain's `MetadataCache` as 64-bit words in native order. A writer changes
/// copies of pages, inserts them dirty under `key(page:)`, and writes them back with `encode`.
/// The caller has checked that the whole table lies in the file; a page that does not is
/// `.corrupt`.
public struct PagedTable: Sendable {
  public let file: ImageFile
  public let cache: MetadataCache
  /// Where entry 0 is.
  public let offset: UInt64
  public let count: Int
  /// Bytes per entry: 4 or 8.
  public let width: Int
  public let order: ByteOrder
  /// The cache's table kind (a driver's own numbering; see `TableKey.kind`).
  public let kind: UInt8
  public let pageEntries: Int
  /// What errors call the table ("Parallels BAT").
  public let name: String

  public init(
    file: ImageFile, cache: MetadataCache, offset: UInt64, count: Int, width: Int = 4, order: ByteOrder,
    kind: UInt8, pageEntries: Int = 1024, name: String
  ) {
    self.file = file
    self.cache = cache
    self.offset = offset
    self.count = count
    self.width = width == 8 ? 8 : 4
    self.order = order
    self.kind = kind
    self.pageEntries = max(1, pageEntries)
    self.name = name
  }

  public var pageCount: Int { (count + pageEntries - 1) / pageEntries }

  /// Where page `page` starts in the file.
  public func pageOffset(_ page: Int) -> UInt64 { offset + UInt64(page) * UInt64(pageEntries * width) }

  /// Entries in page `page` (the last page may be short).
  public func pageLength(_ page: Int) -> Int { min(pageEntries, count - page * pageEntries) }

  public func key(page: Int) -> TableKey { TableKey(file: file, offset: pageOffset(page), kind: kind) }

  /// The entries of page `page` (`page < pageCount`), from the cache or the file.
  public func words(page: Int) throws -> [UInt64] {
    let at = pageOffset(page)
    let n = pageLength(page)
    let what = "\(name) page"
    let words = try cache.value(for: key(page: page), cost: n * 8) {
      width == 8
        ? try file.readTable(of: UInt64.self, at: at, count: n, order: order, what: what)
        : try file.readTable(of: UInt32.self, at: at, count: n, order: order, what: what).map(UInt64.init)
    }
    guard words.count == n else {
      throw VDiskError.corrupt(file.path, at: at, "\(name) page at \(hex(at)) is shorter than expected")
    }
    return words
  }

  /// Entry `index` (`index < count`).
  public func entry(_ index: Int) throws -> UInt64 {
    let page = index / pageEntries
    return try words(page: page)[index - page * pageEntries]
  }

  /// `words` as the file stores them (`width` bytes each, in `order`).
  public func encode(_ words: [UInt64]) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: words.count * width)
    for (i, word) in words.enumerated() {
      for b in 0..<width {
        let shift = order == .littleEndian ? 8 * b : 8 * (width - 1 - b)
        bytes[i * width + b] = UInt8(truncatingIfNeeded: word >> UInt64(shift))
      }
    }
    return bytes
  }
}
