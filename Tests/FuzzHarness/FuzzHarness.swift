import ImageFormats
import Logging
import Partitions
import VDiskCore

/// What every fuzz target does with one input: open it as an image of one format from memory
/// (plan, then build with no backing layer), walk its extents through `LayerChain` and read a
/// bounded amount. Every thrown error is a correct answer to a bad image; a finding is a crash,
/// a hang, a huge allocation or a sanitizer report.
public enum FuzzHarness {
  /// Logs nothing: the fuzzer's output stays readable and logging costs no time.
  public static let logger: Logger = {
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
  public static let path = "/nonexistent/vdiskfs-fuzz/image"

  /// The plan context every harness uses: a file the input names (a backing file, a VMDK extent,
  /// a bundle's storage, an external data file) is never opened from the host, whatever its
  /// path, absolute ones included; it is not found.
  public static func context(writable: Bool = false) -> PlanContext {
    PlanContext(logger: logger, writable: writable) { path, _ in
      throw VDiskError(.notFound, path: path, "fuzz input names a file; none is opened from the host")
    }
  }

  /// `bytes` as an `ImageFile` over memory; a writable one may grow by `growth` bytes.
  public static func file(_ bytes: [UInt8], writable: Bool = false, growth: UInt64 = 0, path: String = path)
    throws -> ImageFile
  {
    try ImageFile(
      source: MemorySource(bytes, limit: UInt64(bytes.count) + growth), path: path, isWritable: writable)
  }

  /// The fuzzer's input as bytes.
  public static func bytes(_ data: UnsafePointer<UInt8>?, _ size: Int) -> [UInt8] {
    data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
  }

  /// Opens `bytes` as `driver`'s format and reads through it; the error that refused it, if any.
  @discardableResult
  public static func layer(_ bytes: [UInt8], driver: any FormatDriver.Type) -> (any Error)? {
    do {
      let file = try file(bytes)
      let plan = try driver.plan(file, context: context())
      let chain = LayerChain(top: try plan.build(nil, MetadataCache(budget: 1 << 20)))
      try walk(chain)
      return nil
    } catch {
      return error
    }
  }

  /// Reads `bytes` as a raw disk's partition table (MBR with EBR chains, or GPT); the error that
  /// refused it, if any.
  @discardableResult
  public static func partitions(_ bytes: [UInt8]) -> (any Error)? {
    do {
      let file = try file(bytes)
      let chain = LayerChain(
        top: try RawDriver.plan(file, context: context()).build(
          nil, MetadataCache(budget: 1 << 20)))
      _ = try PartitionTable.read(chain, logger: logger)
      return nil
    } catch {
      return error
    }
  }

  /// Walks the chain's extents from the start and reads up to 64 KiB at the start of each, within
  /// `readBudget` in all.
  public static func walk(_ chain: LayerChain) throws {
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
