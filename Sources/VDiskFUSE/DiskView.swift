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
  /// The host file the kernel may read and write directly for this view (FUSE passthrough):
  /// the layer's `passthroughFile` of a single-layer chain, for a view asked to allow it.
  public let passthrough: ImageFile?

  public init(content: any ByteView, writable: Bool, allowShrink: Bool = false) {
    self.content = content
    self.writable = writable
    self.allowShrink = allowShrink
    self.allocation = AllocationCache()
    self.passthrough = nil
  }

  /// A view of `chain`; `passthrough`: may be passed through when the chain is one layer whose
  /// driver names its host file (`ImageLayer.passthroughFile`) and that file is the disk's size.
  public init(chain: LayerChain, writable: Bool, allowShrink: Bool = false, passthrough: Bool = false) {
    self.content = chain
    self.writable = writable
    self.allowShrink = allowShrink
    self.allocation = AllocationCache()
    if passthrough, chain.top.backing == nil, let file = chain.top.passthroughFile(writable: writable),
      file.size == chain.virtualSize
    {
      self.passthrough = file
    } else {
      self.passthrough = nil
    }
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
