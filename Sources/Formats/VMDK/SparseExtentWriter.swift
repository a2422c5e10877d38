import Synchronization
import VDiskCore

/// The write side of one hosted sparse extent ("KDMV") opened read-write: plans grain
/// allocations (at the end of the extent file), links them at commit, zeroes whole grains, and
/// writes its dirty grain tables and directory entries back in order (`writeBack`). The engine
/// holds the range locks and does all data I/O.
///
/// The header's "is dirty" byte (vmdk spec, "File header", offset 72: "Value to determine if
/// the extent data file was cleanly closed") is set and synced before the first change after
/// open or after a flush, and cleared once a flush has made everything consistent with no write
/// in flight. QEMU neither sets nor checks it; VMware checks an extent whose byte is set. An
/// extent whose byte was already set when opened keeps it (vdiskfs does not vouch for another
/// writer's crash).
final class SparseExtentWriter: Sendable {
  let file: ImageFile
  let layout: SparseWriteLayout
  let cache: MetadataCache
  let state: Mutex<SparseWriteState>
  /// Serializes write-backs.
  let writeBacks = Mutex<Void>(())
  /// Set before the engine writes data into the file; a flush syncs only when set.
  let dataWritten = Atomic<Bool>(false)
  private let header: Mutex<HeaderState>

  struct HeaderState {
    /// The byte is set in the file by this writer.
    var isSet = false
    /// The byte was set when the extent was opened: left alone.
    let wasSetAtOpen: Bool
    /// Changes begun (`begin`) and not yet committed or aborted.
    var inFlight = 0
  }

  /// Offset of the "is dirty" byte in the header (vmdk spec, "File header").
  static let dirtyByteOffset: UInt64 = 72

  init(
    file: ImageFile, header h: SparseExtentHeader, live: ActiveGrainDirectory, capacity: UInt64,
    cache: MetadataCache
  )
    throws
  {
    guard file.isWritable else {
      throw VDiskError(.readOnly, path: file.path, "the extent is open read-only")
    }
    let layout = try SparseWriteLayout(file: file, header: h)
    self.file = file
    self.layout = layout
    self.cache = cache
    state = Mutex(SparseWriteState(file: file, cache: cache, layout: layout, live: live, capacity: capacity))
    header = Mutex(HeaderState(wasSetAtOpen: h.isDirty))
  }

  var grainSize: UInt64 { layout.grainSize }

  /// Before a change (prepared write or discard): sets the header's dirty byte (and syncs it)
  /// when it is clear, and counts the change in flight until `end`.
  func begin() throws {
    try header.withLock { h in
      if !h.isSet, !h.wasSetAtOpen {
        try [UInt8(1)].withUnsafeBytes { try file.write($0, at: Self.dirtyByteOffset) }
        try file.dataSync()
        h.isSet = true
      }
      h.inFlight += 1
    }
  }

  /// A change begun by `begin` was committed or dropped.
  func end() {
    header.withLock { $0.inFlight -= 1 }
  }

  /// Plans extent bytes `[from, to)`: grains to write in place and new grains; counts as a change
  /// in flight until `end` (after the write is committed or dropped).
  func prepare(from: UInt64, to: UInt64) throws -> [PlannedGrain] {
    try begin()
    do {
      let grains = try state.withLock { s in try s.planGrains(from: from, to: to) }
      dataWritten.store(true, ordering: .releasing)
      return grains
    } catch {
      end()
      throw error
    }
  }

  /// Links the new grains of a prepared write whose data is written.
  func link(_ grains: [PlannedGrain]) throws {
    guard grains.contains(where: \.isNew) else { return }
    try state.withLock { s in try s.link(grains) }
  }

  /// Zeroes whole grains of extent bytes `[from, to)`; returns the extent ranges left for the
  /// engine (see `SparseWriteState.zeroGrains`).
  func zeroGrains(from: UInt64, to: UInt64, hasBacking: Bool) throws -> [Range<UInt64>] {
    try begin()
    defer { end() }
    return try state.withLock { s in try s.zeroGrains(from: from, to: to, hasBacking: hasBacking) }
  }

  /// Writes everything back and syncs, then clears the header's dirty byte when this writer set
  /// it and nothing is dirty or in flight. The clear is not synced: if it is lost, the byte stays
  /// set, which only asks for a check.
  func flush() throws {
    try writeBack()
    try header.withLock { h in
      guard h.isSet, h.inFlight == 0, !state.withLock({ $0.hasDirtyMetadata }) else { return }
      try [UInt8(0)].withUnsafeBytes { try file.write($0, at: Self.dirtyByteOffset) }
      h.isSet = false
    }
  }
}
