import Logging
import Partitions
import VDiskCore

/// What every fuzz target does with one input: open it as an image of one format from memory
/// (plan, then build with no backing layer), walk its extents through `LayerChain` and read a
/// bounded amount. Every thrown error is a correct answer to a bad image; a finding is a crash,
/// a hang, a huge allocation or a sanitizer report.
public enum FuzzHarness {
  /// Logs nothing: the fuzzer's output stays readable and logging costs no time.
  static let logger: Logger = {
    var logger = Logger(label: "vdiskfs-fuzz", factory: { _ in SwiftLogNoOpLogHandler() })
    logger.logLevel = .critical
    return logger
  }()

  /// The most extents walked and bytes read per input: enough to reach every table an image
  /// can point at in a small input, bounded so that one input never runs long.
  static let maxExtents = 512
  static let readBudget = 8 << 20

  /// A path no file lies under: relative names an image gives (vmdk extents, external data
  /// files) are looked up there and not found, so an input never reads a real file.
  static let path = "/nonexistent/vdiskfs-fuzz/image"

  /// The input as an `ImageFile` over memory that refuses to grow.
  static func file(_ data: UnsafePointer<UInt8>?, _ size: Int) throws -> ImageFile {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    return try ImageFile(
      source: MemorySource(bytes, limit: UInt64(bytes.count)), path: path, isWritable: false)
  }

  /// Opens the input as `driver`'s format and reads through it.
  public static func layer(_ data: UnsafePointer<UInt8>?, _ size: Int, driver: any FormatDriver.Type) -> Int32
  {
    do {
      let file = try file(data, size)
      let plan = try driver.plan(file, context: PlanContext(logger: logger))
      let chain = LayerChain(top: try plan.build(nil, MetadataCache(budget: 1 << 20)))
      try walk(chain)
    } catch {}
    return 0
  }

  /// Reads the input as a raw disk's partition table (MBR with EBR chains, or GPT).
  public static func partitions(_ data: UnsafePointer<UInt8>?, _ size: Int, raw: any FormatDriver.Type)
    -> Int32
  {
    do {
      let file = try file(data, size)
      let chain = LayerChain(
        top: try raw.plan(file, context: PlanContext(logger: logger)).build(
          nil, MetadataCache(budget: 1 << 20)))
      _ = try PartitionTable.read(chain, logger: logger)
    } catch {}
    return 0
  }

  /// Walks the chain's extents from the start and reads up to 64 KiB at the start of each, within
  /// `readBudget` in all.
  static func walk(_ chain: LayerChain) throws {
    let size = chain.virtualSize
    var buffer = [UInt8](repeating: 0, count: 64 << 10)
    var offset: UInt64 = 0
    var budget = readBudget
    for _ in 0..<maxExtents where offset < size {
      let extent = try chain.status(at: offset, maxLength: size - offset)
      let count = Int(min(UInt64(buffer.count), size - offset))
      if count <= budget {
        _ = try buffer.withUnsafeMutableBytes {
          try chain.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<count]), at: offset)
        }
        budget -= count
      }
      offset += max(extent.length, 1)
    }
  }
}
