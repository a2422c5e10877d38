/// One piece of a prepared write: where in which host file, and what goes there.
public struct WriteSegment: Sendable {
  public enum Content: Sendable {
    /// `length` guest bytes of the caller's data, starting at guest offset `guestOffset`.
    case guest(guestOffset: UInt64, length: Int)
    /// Bytes the layer supplies: copy-on-write head or tail read from the chain, or zeros.
    case fill([UInt8])
  }

  public var file: ImageFile
  public var hostOffset: UInt64
  public var content: Content

  public init(file: ImageFile, hostOffset: UInt64, content: Content) {
    self.file = file
    self.hostOffset = hostOffset
    self.content = content
  }

  public var length: Int {
    switch content {
    case .guest(_, let length): length
    case .fill(let bytes): bytes.count
    }
  }
}

/// The answer of `prepareWrite`: segments to write, in host order per file, and what the layer
/// must link afterwards. Opaque to the engine except for `segments`.
public struct PreparedWrite: Sendable {
  public var segments: [WriteSegment]
  /// Identifies the layer's pending allocation (0 when the write goes in place and there is
  /// nothing to commit).
  public var ticket: UInt64

  public init(segments: [WriteSegment], ticket: UInt64 = 0) {
    self.segments = segments
    self.ticket = ticket
  }
}

public enum DiscardMode: Sendable, Equatable {
  /// `fallocate(PUNCH_HOLE|KEEP_SIZE)`, `fstrim`, `blkdiscard`: the range may be deallocated; it
  /// must read as zeros afterwards, even where a backing layer has data.
  case punchHole
  /// `fallocate(ZERO_RANGE)`: the range must read as zeros; allocation may stay.
  case zeroRange
}

/// A layer that can be written (the top of a chain opened read-write).
///
/// A write is two-phase, so that readers never see a cluster linked before its data is on disk
/// and metadata is ordered for crash safety (DESIGN.md, "Writes"):
/// 1. `prepareWrite` allocates what the range needs (copy-on-write from the chain, out of zero or
///    compressed clusters, out of clusters shared with snapshots), holding the affected clusters
///    against concurrent allocating writes, and returns the host segments to write: guest bytes
///    plus any fill (head/tail) the layer read, to be merged into as few writes as possible.
/// 2. The engine writes every segment. 3. `commitWrite` links the new clusters (metadata updates
///    stay in the layer's cache, dirty, written back in dependency order by `flush`) and releases
///    the clusters; on a failed data write the engine calls `abortWrite` instead (a leak at worst).
public protocol WritableLayer: ImageLayer {
  func prepareWrite(at offset: UInt64, length: UInt64) throws -> PreparedWrite
  func commitWrite(_ prepared: PreparedWrite) throws
  func abortWrite(_ prepared: PreparedWrite)

  /// Makes whole clusters (or subclusters) of the range read as zeros per `mode`, freeing host
  /// clusters where allowed; returns the guest ranges it did not handle (partial edges, or all of
  /// it where the format cannot mark zeros), which the engine then overwrites with zeros.
  func discard(at offset: UInt64, length: UInt64, mode: DiscardMode) throws -> [Range<UInt64>]

  /// Writes dirty metadata back in dependency order, then `fdatasync`s the files.
  func flush() throws

  /// Grows (or, when `allowShrink`, shrinks) the virtual disk.
  func resize(to newSize: UInt64, allowShrink: Bool) throws
}
