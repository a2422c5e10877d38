import Logging
import Synchronization
import VDiskCore

/// What one file of the tree shows, and whether it may be written.
public struct DiskView: Sendable {
  public let content: any ByteView
  public let writable: Bool
  /// `-o allow_shrink`: truncating the file smaller shrinks the virtual disk.
  public let allowShrink: Bool
  /// `st_blocks` source, computed on first use and kept until a write changes the view.
  let allocation: AllocationCache

  public init(content: any ByteView, writable: Bool, allowShrink: Bool = false) {
    self.content = content
    self.writable = writable
    self.allowShrink = allowShrink
    self.allocation = AllocationCache()
  }

  public init(chain: LayerChain, writable: Bool, allowShrink: Bool = false) {
    self.init(content: chain, writable: writable, allowShrink: allowShrink)
  }
}

/// Bytes held as data by a view, computed on first use and kept while the tree's write
/// generation stays the same (any write to any view may change it: views share storage).
final class AllocationCache: Sendable {
  private let cached = Mutex<(generation: UInt64, bytes: UInt64)?>(nil)

  func value(for view: any ByteView, generation: UInt64, logger: Logger) -> UInt64 {
    cached.withLock { cached in
      if let cached, cached.generation == generation { return cached.bytes }
      let computed: UInt64
      do {
        computed = try view.allocatedBytes()
      } catch {
        logger.warning("cannot compute allocated size, reporting 0 blocks: \(error)")
        computed = 0
      }
      cached = (generation, computed)
      return computed
    }
  }
}
