import Synchronization
import VDiskCore

/// The write side of a qcow2 layer opened read-write: owns the active L1 table, the refcount
/// table and the allocation state (`WriteState`, behind one mutex that is never held across guest
/// data I/O and that readers never take). Dirty L2 tables and refcount blocks live in the chain's
/// `MetadataCache`, where readers find them; the L1 table readers see is `activeL1`.
///
/// The engine (`LayerChain`) holds the range locks, reads fill and writes data; this type only
/// plans allocations and links them. Lazy refcounts and the header dirty bit are not used:
/// refcounts are kept exact and written back before anything that depends on them (see
/// `writeBack`).
final class QCOW2Writer: Sendable {
  let file: ImageFile
  let state: Mutex<WriteState>
  /// The committed L1 table, for readers.
  let activeL1: ActiveL1
  let locks = RangeLocks()
  /// The chain's metadata cache, where the dirty tables live.
  let cache: MetadataCache
  /// Serializes write-backs (each writes one snapshot of the dirty metadata).
  let writeBacks = Mutex<Void>(())
  /// Fixed for the image's life; kept outside `state` so the write path does not lock for it.
  let geometry: WriteGeometry
  private let size: Atomic<UInt64>

  init(file: ImageFile, header: QCOW2Header, hasBacking: Bool, cache: MetadataCache) throws {
    guard file.isWritable else { throw VDiskError(.readOnly, path: file.path, "the image is open read-only") }
    try Self.checkCanWrite(header, path: file.path)
    self.file = file
    self.cache = cache
    let initial = try WriteState(file: file, header: header, hasBacking: hasBacking, cache: cache)
    size = Atomic(initial.virtualSize)
    geometry = initial.geometry
    activeL1 = initial.activeL1
    state = Mutex(initial)
    // qcow2 spec, "autoclear_features": clear bits we do not maintain before writing.
    if header.version >= 3, header.autoclearFeatures != 0 {
      try file.writeHeaderField(.autoclearFeatures, 0)
      try file.dataSync()
    }
  }

  /// Refuses images this writer must not change.
  static func checkCanWrite(_ header: QCOW2Header, path: String) throws {
    if header.isCorrupt {
      throw VDiskError(
        .readOnly, path: path, "image is marked corrupt; repair with qemu-img check -r all \(path)")
    }
    if header.isDirty {
      throw VDiskError(
        .readOnly, path: path,
        "image was not closed cleanly (dirty bit, lazy refcounts); repair with qemu-img check -r all \(path)")
    }
    if header.hasExternalDataFile {
      throw VDiskError.unsupported(path, "writing images with an external data file is not supported")
    }
    if header.autoclearFeatures & QCOW2Header.autoclearBitmaps != 0 {
      throw VDiskError.unsupported(path, "writing images with persistent dirty bitmaps is not supported")
    }
  }

  var virtualSize: UInt64 { size.load(ordering: .acquiring) }

  // MARK: Two-phase writes

  /// Plans the write of guest bytes `[offset, offset + length)` (their clusters held by the
  /// engine): allocates, and says where each cluster's bytes go and what to fill.
  func prepareWrite(at offset: UInt64, length: UInt64) throws -> PreparedWrite {
    let (end, overflow) = offset.addingReportingOverflow(length)
    guard length > 0, !overflow, end <= virtualSize else {
      throw VDiskError(
        .invalidArgument, path: file.path, offset: offset,
        "write of \(length) bytes at \(hex(offset)) lies outside the disk (size \(hex(virtualSize)))")
    }
    let (writes, allocated) = try state.withLock { s in try s.planWrite(from: offset, to: end) }
    return PreparedWrite(
      targets: targets(for: writes, from: offset, to: end),
      token: PendingWrite(writes: writes, allocated: allocated))
  }

  func commitWrite(_ prepared: PreparedWrite) throws {
    guard let pending = prepared.token as? PendingWrite else { return }
    try state.withLock { s in try s.commit(pending.writes) }
    try writeBack(ifOverBudget: true)
  }

  /// Forgets a prepared write, freeing its new clusters (never linked, so at once; a leak if
  /// this fails).
  func abortWrite(_ prepared: PreparedWrite) {
    guard let pending = prepared.token as? PendingWrite, let allocated = pending.allocated else { return }
    state.withLock { s in try? s.free(allocated) }
  }

  /// Where the planned clusters' bytes go: each cluster is a run at its host cluster; units the
  /// write does not cover are filled from the chain's current view where the plan says so (new
  /// or newly allocated units: from the backing chain, a compressed or shared cluster, or zeros).
  private func targets(for writes: [ClusterWrite], from offset: UInt64, to end: UInt64) -> [WriteTarget] {
    let (clusterSize, units) = (geometry.clusterSize, geometry.units)
    let unitSize = clusterSize / UInt64(units)
    return writes.map { w in
      let cluster = w.guestCluster..<w.guestCluster + clusterSize
      var fill: [Range<UInt64>] = []
      for unit in 0..<units {
        let bit = UInt32(1) << UInt32(unit)
        let unitRange =
          cluster.lowerBound + UInt64(unit) * unitSize..<cluster.lowerBound + UInt64(unit + 1) * unitSize
        if w.copy & bit != 0 {
          fill.append(unitRange)
        } else if w.fill & bit != 0 {
          let head = unitRange.lowerBound..<min(unitRange.upperBound, max(unitRange.lowerBound, offset))
          let tail = max(unitRange.lowerBound, min(unitRange.upperBound, end))..<unitRange.upperBound
          if !head.isEmpty { fill.append(head) }
          if !tail.isEmpty { fill.append(tail) }
        }
      }
      return WriteTarget(file: file, hostOffset: w.host, guest: cluster, fill: fill)
    }
  }

  // MARK: Flush

  /// Writes dirty metadata back in order; with nothing dirty, a single `fdatasync`. Never syncs
  /// under the writer's lock.
  func flush() throws {
    try writeBack()
  }

  func setVirtualSize(_ newSize: UInt64) {
    size.store(newSize, ordering: .releasing)
  }
}
