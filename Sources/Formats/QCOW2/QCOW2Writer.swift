import Synchronization
import VDiskCore

/// The write side of a qcow2 layer opened read-write: owns the active L1 table, dirty L2 tables
/// and refcounts (`WriteState`, behind one mutex that is never held across guest data I/O) and
/// the guest clusters held by writes in flight (`ClusterLocks`).
///
/// Readers of the layer look L2 tables up through `l2Table(l1Index:)`, so they see exactly what
/// has been committed. Lazy refcounts and the header dirty bit are not used: refcounts are kept
/// exact and written back before anything that depends on them (see `writeBack`).
final class QCOW2Writer: Sendable {
  let file: ImageFile
  let state: Mutex<WriteState>
  let locks = ClusterLocks()
  /// Fixed for the image's life; kept outside `state` so the write path does not lock for it.
  let geometry: WriteGeometry
  private let size: Atomic<UInt64>

  init(file: ImageFile, header: QCOW2Header, hasBacking: Bool, cache: MetadataCache) throws {
    guard file.isWritable else { throw VDiskError(.readOnly, path: file.path, "the image is open read-only") }
    try Self.checkCanWrite(header, path: file.path)
    self.file = file
    let initial = try WriteState(file: file, header: header, hasBacking: hasBacking, cache: cache)
    size = Atomic(initial.virtualSize)
    geometry = initial.geometry
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

  /// For readers: the L2 table L1 entry `index` names, as committed.
  func l2Table(l1Index index: Int) throws -> (offset: UInt64, words: [UInt64])? {
    try state.withLock { s in try s.l2Table(l1Index: index) }
  }

  // MARK: Two-phase writes

  func prepareWrite(layer: QCOW2Layer, at offset: UInt64, length: UInt64) throws -> PreparedWrite {
    let (end, overflow) = offset.addingReportingOverflow(length)
    guard length > 0, !overflow, end <= virtualSize else {
      throw VDiskError(
        .invalidArgument, path: file.path, offset: offset,
        "write of \(length) bytes at \(hex(offset)) lies outside the disk (size \(hex(virtualSize)))")
    }
    let held = clusters(from: offset, to: end)
    locks.acquire(held)
    do {
      let (writes, ticket) = try state.withLock { s in
        let (writes, allocated) = try s.planWrite(from: offset, to: end)
        let ticket = s.nextTicket
        s.nextTicket += 1
        s.pending[ticket] = PendingWrite(clusters: held, writes: writes, allocated: allocated)
        return (writes, ticket)
      }
      let segments: [WriteSegment]
      do {
        segments = try self.segments(for: writes, layer: layer, from: offset, to: end)
      } catch {
        abortWrite(PreparedWrite(segments: [], ticket: ticket), releasing: false)
        throw error
      }
      return PreparedWrite(segments: segments, ticket: ticket)
    } catch {
      locks.release(held)
      throw error
    }
  }

  func commitWrite(_ prepared: PreparedWrite) throws {
    let held = try state.withLock { s -> ClosedRange<UInt64>? in
      guard let pending = s.pending[prepared.ticket] else { return nil }
      try s.commit(pending.writes)
      s.pending[prepared.ticket] = nil
      return pending.clusters
    }
    if let held { locks.release(held) }
  }

  func abortWrite(_ prepared: PreparedWrite) {
    abortWrite(prepared, releasing: true)
  }

  /// Forgets a prepared write, freeing its new clusters; releases its cluster locks unless the
  /// caller (`prepareWrite` failing) does that itself.
  private func abortWrite(_ prepared: PreparedWrite, releasing: Bool) {
    let held = state.withLock { s -> ClosedRange<UInt64>? in
      guard let pending = s.pending.removeValue(forKey: prepared.ticket) else { return nil }
      // Never linked: the new clusters can be freed at once (a leak if this fails).
      if let allocated = pending.allocated { try? s.free(allocated) }
      return pending.clusters
    }
    if releasing, let held { locks.release(held) }
  }

  /// The segments of a planned write: guest bytes where they land, plus fill read from the
  /// layer's current view (this layer's mapping over its backing) for the parts of new or
  /// newly allocated units the write does not cover. Sorted by host offset, merged where both
  /// guest and host are contiguous.
  private func segments(for writes: [ClusterWrite], layer: QCOW2Layer, from offset: UInt64, to end: UInt64)
    throws -> [WriteSegment]
  {
    let (clusterSize, units) = (geometry.clusterSize, geometry.units)
    let unitSize = clusterSize / UInt64(units)
    let view = LayerChain(top: layer)
    let diskEnd = virtualSize
    var segments: [WriteSegment] = []
    func addFill(_ start: UInt64, _ stop: UInt64, _ w: ClusterWrite) throws {
      guard start < stop else { return }
      var bytes = [UInt8](repeating: 0, count: Int(stop - start))
      if start < diskEnd {
        _ = try bytes.withUnsafeMutableBytes { try view.read(into: $0, at: start) }
      }
      segments.append(
        WriteSegment(file: file, hostOffset: w.host + (start - w.guestCluster), content: .fill(bytes)))
    }
    for w in writes {
      let clusterEnd = w.guestCluster + clusterSize
      let guestStart = max(offset, w.guestCluster)
      let guestEnd = min(end, clusterEnd)
      segments.append(
        WriteSegment(
          file: file, hostOffset: w.host + (guestStart - w.guestCluster),
          content: .guest(guestOffset: guestStart, length: Int(guestEnd - guestStart))))
      var unit = 0
      while unit < units {
        let bit = UInt32(1) << UInt32(unit)
        let unitStart = w.guestCluster + UInt64(unit) * unitSize
        let unitEnd = unitStart + unitSize
        if w.copy & bit != 0 {
          try addFill(unitStart, unitEnd, w)
        } else if w.fill & bit != 0 {
          try addFill(unitStart, min(unitEnd, max(unitStart, guestStart)), w)
          try addFill(max(unitStart, min(unitEnd, guestEnd)), unitEnd, w)
        }
        unit += 1
      }
    }
    segments.sort { $0.hostOffset < $1.hostOffset }
    return Self.merged(segments)
  }

  /// Joins neighbouring fill segments, and guest segments contiguous in guest and host.
  static func merged(_ segments: [WriteSegment]) -> [WriteSegment] {
    var result: [WriteSegment] = []
    for segment in segments {
      if var last = result.last, last.hostOffset + UInt64(last.length) == segment.hostOffset {
        switch (last.content, segment.content) {
        case (.guest(let a, let n), .guest(let b, let m)) where a + UInt64(n) == b:
          last.content = .guest(guestOffset: a, length: n + m)
          result[result.count - 1] = last
          continue
        case (.fill(let a), .fill(let b)):
          last.content = .fill(a + b)
          result[result.count - 1] = last
          continue
        default:
          break
        }
      }
      result.append(segment)
    }
    return result
  }

  // MARK: Flush

  func flush() throws {
    try state.withLock { s in try s.writeBack() }
  }

  func setVirtualSize(_ newSize: UInt64) {
    size.store(newSize, ordering: .releasing)
  }
}
