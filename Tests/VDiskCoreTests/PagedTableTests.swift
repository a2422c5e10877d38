import Testing
import VDiskCore

/// A table read page by page into the metadata cache: entries across pages and a short last
/// page, both widths and byte orders, cache hits, `encode` as the file stores them, and a table
/// running past end-of-file refused.
@Suite struct PagedTableTests {
  @Test(arguments: [(4, ByteOrder.littleEndian), (4, .bigEndian), (8, .littleEndian), (8, .bigEndian)])
  func entriesAcrossPages(width: Int, order: ByteOrder) throws {
    let count = 10
    let values: [UInt64] = (0..<count).map { UInt64($0) &* 0x0101_0101 &+ (width == 8 ? 0x1_0000_0000 : 7) }
    let probe = PagedTable(
      file: try ImageFile(source: MemorySource([]), path: "p", isWritable: false),
      cache: MetadataCache(budget: 0),
      offset: 0, count: 0, width: width, order: order, kind: 1, name: "t")
    let bytes = [UInt8](repeating: 0xAA, count: 100) + probe.encode(values)
    let file = try ImageFile(source: MemorySource(bytes), path: "table", isWritable: false)
    let cache = MetadataCache(budget: 1 << 20)
    let table = PagedTable(
      file: file, cache: cache, offset: 100, count: count, width: width, order: order, kind: 9,
      pageEntries: 4,
      name: "test table")
    #expect(table.pageCount == 3)
    #expect(table.pageLength(2) == 2)
    #expect(table.pageOffset(1) == 100 + UInt64(4 * width))
    #expect(try (0..<count).map { try table.entry($0) } == values)
    #expect(try table.words(page: 2) == Array(values[8...]))
    #expect(cache.count == 3)
    #expect(table.encode(try table.words(page: 0)) == Array(bytes[100..<(100 + 4 * width)]))
    #expect(table.key(page: 1).kind == 9)
  }

  @Test func aTablePastEndOfFileIsCorrupt() throws {
    let file = try ImageFile(
      source: MemorySource([UInt8](repeating: 1, count: 10)), path: "short", isWritable: false)
    let table = PagedTable(
      file: file, cache: MetadataCache(budget: 1 << 20), offset: 0, count: 8, order: .littleEndian, kind: 0,
      pageEntries: 2, name: "short table")
    #expect(try table.entry(1) == 0x0101_0101)
    #expect(throws: VDiskError.self) { _ = try table.entry(3) }
  }
}
