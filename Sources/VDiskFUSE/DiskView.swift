import Logging
import Synchronization
import VDiskCore

#if canImport(Glibc)
  import Glibc
#endif

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
  /// For a writable passed-through view: notices the kernel's writes, which never reach the
  /// daemon, by the host file's mtime and size (partition tables, `st_blocks`).
  let hostChanges: HostFileChanges?
  /// Opened with direct I/O whatever the open asks: a partition of a writable passed-through
  /// disk.raw, whose pages the kernel's writes to disk.raw would leave stale (the daemon never
  /// sees them to drop them).
  let uncached: Bool

  public init(content: any ByteView, writable: Bool, allowShrink: Bool = false) {
    self.init(content: content, writable: writable, allowShrink: allowShrink, uncached: false)
  }

  init(content: any ByteView, writable: Bool, allowShrink: Bool = false, uncached: Bool) {
    self.content = content
    self.writable = writable
    self.allowShrink = allowShrink
    self.allocation = AllocationCache()
    self.passthrough = nil
    self.hostChanges = nil
    self.uncached = uncached
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
      self.hostChanges = writable ? HostFileChanges(file) : nil
    } else {
      self.passthrough = nil
      self.hostChanges = nil
    }
    self.uncached = false
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

/// Counts the changes of a host file the kernel writes directly (FUSE passthrough): the
/// generation goes up each time `generation()` finds the file's mtime or size different from the
/// last look, and the file's cached size follows the size seen (one `fstat` for both). Relies on the host file system's timestamps (fine-grained once observed on Linux
/// 6.13+ ext4, xfs, btrfs and tmpfs).
final class HostFileChanges: Sendable {
  private struct Stamp: Equatable {
    var seconds: Int
    var nanoseconds: Int
    var size: Int
  }
  private let file: ImageFile
  private let state = Mutex<(stamp: Stamp?, generation: UInt64)>((nil, 0))

  init(_ file: ImageFile) { self.file = file }

  func generation() -> UInt64 {
    var st = stat()
    guard let fd = file.descriptor?.rawValue, fstat(fd, &st) == 0 else {
      return state.withLock { $0.generation }
    }
    file.noteExternalGrowth(to: UInt64(max(st.st_size, 0)))
    let now = Stamp(seconds: st.st_mtim.tv_sec, nanoseconds: st.st_mtim.tv_nsec, size: Int(st.st_size))
    return state.withLock { s in
      if let seen = s.stamp, seen != now { s.generation += 1 }
      s.stamp = now
      return s.generation
    }
  }
}
