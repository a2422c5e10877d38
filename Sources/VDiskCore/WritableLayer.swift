/// One host-contiguous run of a prepared write: where it lands, and which of its bytes the engine
/// fills from the disk's current contents.
///
/// The run holds guest bytes `guest` at `hostOffset` onwards in `file`. The engine writes the part
/// of the caller's data that falls inside `guest`, plus every `fill` range (guest bytes outside the
/// write whose current contents must move into the run: copy-on-write from the backing chain, a
/// compressed or shared cluster's old bytes, zeros). Bytes of `guest` in neither stay as they are.
public struct WriteTarget: Sendable {
  public var file: ImageFile
  /// Host offset of guest byte `guest.lowerBound`.
  public var hostOffset: UInt64
  public var guest: Range<UInt64>
  /// Sub-ranges of `guest`, outside the write, ascending and disjoint.
  public var fill: [Range<UInt64>]

  public init(file: ImageFile, hostOffset: UInt64, guest: Range<UInt64>, fill: [Range<UInt64>] = []) {
    self.file = file
    self.hostOffset = hostOffset
    self.guest = guest
    self.fill = fill
  }

  /// The run of one allocation unit (guest bytes `unit`, starting at host offset `host`) for a
  /// write of guest bytes `written`, which overlaps it: the written part, in place; or, for a unit
  /// the write allocates (`isNew`), the whole unit, the rest of it filled.
  public static func unit(
    _ unit: Range<UInt64>, at host: UInt64, in file: ImageFile, writing written: Range<UInt64>, isNew: Bool
  ) -> WriteTarget {
    let lo = max(written.lowerBound, unit.lowerBound)
    let hi = min(written.upperBound, unit.upperBound)
    guard isNew else {
      return WriteTarget(file: file, hostOffset: host + (lo - unit.lowerBound), guest: lo..<hi)
    }
    let fill = [unit.lowerBound..<lo, hi..<unit.upperBound].filter { !$0.isEmpty }
    return WriteTarget(file: file, hostOffset: host, guest: unit, fill: fill)
  }
}

/// The answer of `prepareWrite`: the runs to write and the layer's own record of what to link at
/// commit (opaque to the engine).
public struct PreparedWrite: Sendable {
  public var targets: [WriteTarget]
  /// What the layer needs back in `commitWrite`/`abortWrite` (nil when there is nothing to link).
  public var token: (any Sendable)?

  public init(targets: [WriteTarget], token: (any Sendable)? = nil) {
    self.targets = targets
    self.token = token
  }
}

public enum DiscardMode: Sendable, Equatable {
  /// `fallocate(PUNCH_HOLE|KEEP_SIZE)`, `fstrim`, `blkdiscard`: the range may be deallocated; it
  /// must read as zeros afterwards, even where a backing layer has data.
  case punchHole
  /// `fallocate(ZERO_RANGE)`: the range must read as zeros; allocation may stay.
  case zeroRange
}

/// A layer that can be written (the top of a chain opened read-write). The layer implements its
/// format's allocation and metadata only; the engine (`LayerChain+Write.swift`) holds the range
/// locks, reads copy-on-write fill through the chain, and does all data I/O.
///
/// A write is two-phase, so that readers never see a unit linked before its data is written and
/// metadata is ordered for crash safety (docs/DESIGN.md, "The write path"). With the units of the
/// range held in `writeLocks`:
/// 1. `prepareWrite` allocates what the range needs (out of unallocated, zero, compressed or
///    shared units), without linking it, and returns the host runs to write and what to fill.
/// 2. The engine reads the fill bytes through the chain (which still shows the old mapping) and
///    writes fill and guest bytes, one gathered write per host-contiguous run.
/// 3. `commitWrite` links the new units (metadata updates stay dirty in the layer's cache, written
///    back in dependency order by `flush` or when the cache needs room); on a failed data write
///    the engine calls `abortWrite` instead (a leak at worst).
public protocol WritableLayer: ImageLayer {
  /// The allocation unit in guest bytes (a cluster, grain or block): the granularity of the
  /// engine's range locks. A power of two.
  var writeUnit: UInt64 { get }
  /// The locks the engine takes on this layer's units (one per layer, whatever views use it).
  var writeLocks: RangeLocks { get }

  /// On entry `[offset, offset + length)` lies inside the disk, `length > 0`, and its units are
  /// held. Returns runs that together cover the whole range, each unit of which is in a run.
  func prepareWrite(at offset: UInt64, length: UInt64) throws -> PreparedWrite
  func commitWrite(_ prepared: PreparedWrite) throws
  func abortWrite(_ prepared: PreparedWrite)

  /// With the units of the range held: makes whole units of the range read as zeros per `mode`,
  /// freeing host space where allowed; returns the guest ranges it did not handle (partial edges,
  /// or all of it where the format cannot mark zeros), which the engine then overwrites with zeros.
  func discard(at offset: UInt64, length: UInt64, mode: DiscardMode) throws -> [Range<UInt64>]

  /// Writes dirty metadata back in dependency order, then `fdatasync`s the files. With nothing
  /// dirty, one `fdatasync` at most.
  func flush() throws

  /// With every unit held: grows (or, when `allowShrink`, shrinks) the virtual disk.
  func resize(to newSize: UInt64, allowShrink: Bool) throws

  /// Judges the caller's bytes of one write round before they land: runs `land` (which writes
  /// them and the round's fill) or throws instead. The engine calls it with the round's units
  /// held; discards that the layer leaves to the engine come here as writes of zeros. A probed
  /// raw image refuses bytes that would make it probe as another format (`RawLayer`).
  func vet(_ bytes: UnsafeRawBufferPointer, at offset: UInt64, land: () throws -> Void) throws
}

extension WritableLayer {
  /// Lands every write: no layer but a probed raw one judges content.
  public func vet(_ bytes: UnsafeRawBufferPointer, at offset: UInt64, land: () throws -> Void) throws {
    try land()
  }
}
