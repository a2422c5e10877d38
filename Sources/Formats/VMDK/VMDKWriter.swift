import Synchronization
import VDiskCore

/// How one extent of a writable disk takes writes.
enum ExtentWriter: Sendable {
  /// FLAT / VMFS: in place at `start` in `file`; `written` says whether a flush must sync it.
  case flat(file: ImageFile, start: UInt64, written: FlatWritten)
  /// Hosted sparse ("KDMV").
  case sparse(SparseExtentWriter)
}

/// Whether data was written to a flat extent file since its last sync.
final class FlatWritten: Sendable {
  let flag = Atomic<Bool>(false)
}

/// The write side of a vmdk layer opened read-write: splits each engine request over the
/// extents (flat ones are written in place, sparse ones allocate grains), changes the
/// descriptor's CID once before the first change, and writes everything back on flush. Delta
/// disks are written like any other: only this top layer changes; the engine reads the parent
/// for a new grain's fill.
final class VMDKWriter: LayerWriter {
  let path: String
  let extents: [VMDKExtent]
  /// The disk's size: where the last extent ends.
  let virtualSize: UInt64
  let writers: [ExtentWriter]
  let descriptor: DescriptorCID?
  let locks = RangeLocks()
  /// The range-lock unit: the largest grain (grains of every sparse extent lie inside one unit,
  /// since sparse extents start on multiples of it), or a page for flat-only disks.
  let writeUnit: UInt64
  let hasBacking: Bool
  let cache: MetadataCache
  /// The CID after the first change of this session (nil before it).
  let newCID = Mutex<UInt32?>(nil)
  private let oldCID: UInt32?

  /// Checks the extents can be written (`.readOnly` with the reason when not) and builds their
  /// writers.
  init(
    path: String, extents: [VMDKExtent], writers: [ExtentWriter], descriptor: DescriptorCID?, cid: UInt32?,
    hasBacking: Bool, cache: MetadataCache
  ) throws {
    self.path = path
    self.extents = extents
    virtualSize = extents.last.map { $0.start + $0.length } ?? 0
    self.writers = writers
    self.descriptor = descriptor
    self.hasBacking = hasBacking
    self.cache = cache
    oldCID = cid
    var unit: UInt64 = 4096
    for writer in writers {
      if case .sparse(let s) = writer { unit = max(unit, s.grainSize) }
    }
    for (extent, writer) in zip(extents, writers) {
      if case .sparse = writer, extent.start % unit != 0 {
        throw VDiskError(
          .readOnly, path: path,
          "refusing to write: sparse extent \"\(extent.fileName)\" starts at guest byte \(hex(extent.start)), not on a multiple of the grain size \(hex(unit))"
        )
      }
    }
    writeUnit = unit
  }

  /// Before the first change of the session: a new CID in the descriptor, synced (before any
  /// data, as QEMU does, so that a crash never leaves changed content under the old CID).
  func beginChange() throws {
    try newCID.withLock { cid in
      guard cid == nil else { return }
      let fresh = DescriptorCID.randomCID(other: oldCID)
      try descriptor?.write(fresh)
      cid = fresh
    }
  }

  /// Pieces of guest range `[offset, end)` by extent: (index, extent-relative range).
  private func pieces(_ extents: [VMDKExtent], from offset: UInt64, to end: UInt64) -> [(Int, Range<UInt64>)]
  {
    var result: [(Int, Range<UInt64>)] = []
    guard var index = extents.lastIndex(where: { $0.start <= offset }) else { return [] }
    var position = offset
    while position < end, index < extents.count {
      let e = extents[index]
      let stop = min(end, e.start + e.length)
      if stop > position { result.append((index, position - e.start..<stop - e.start)) }
      position = stop
      index += 1
    }
    return result
  }

  /// What `commitWrite`/`abortWrite` need: the planned grains of each sparse extent touched.
  /// Each sparse writer counts the write in flight until `finish` (once, whichever of commit and
  /// abort comes first: the engine aborts after a failed commit).
  final class Pending: Sendable {
    let sparse: [(writer: Int, grains: [PlannedGrain])]
    private let finished = Atomic<Bool>(false)

    init(_ sparse: [(writer: Int, grains: [PlannedGrain])]) {
      self.sparse = sparse
    }

    func finish(_ writers: [ExtentWriter]) {
      guard !finished.exchange(true, ordering: .acquiringAndReleasing) else { return }
      for (index, _) in sparse {
        if case .sparse(let writer) = writers[index] { writer.end() }
      }
    }
  }

  func prepareWrite(at offset: UInt64, length: UInt64) throws -> PreparedWrite {
    let (end, overflow) = offset.addingReportingOverflow(length)
    guard length > 0, !overflow, end <= virtualSize else {
      throw VDiskError(
        .invalidArgument, path: path, offset: offset,
        "write of \(length) bytes at \(hex(offset)) lies outside the disk (size \(hex(virtualSize)))")
    }
    try beginChange()
    var targets: [WriteTarget] = []
    var prepared: [(writer: Int, grains: [PlannedGrain])] = []
    do {
      for (index, range) in pieces(extents, from: offset, to: offset + length) {
        let e = extents[index]
        switch writers[index] {
        case .flat(let file, let start, let written):
          written.flag.store(true, ordering: .releasing)
          targets.append(
            WriteTarget(
              file: file, hostOffset: start + range.lowerBound,
              guest: e.start + range.lowerBound..<e.start + range.upperBound))
        case .sparse(let writer):
          let grains = try writer.prepare(from: range.lowerBound, to: range.upperBound)
          prepared.append((index, grains))
          targets += Self.targets(grains, writer: writer, extent: e, range: range)
        }
      }
    } catch {
      Pending(prepared).finish(writers)
      throw error
    }
    return PreparedWrite(targets: targets, token: Pending(prepared))
  }

  /// Runs of a sparse extent's planned grains: a grain written in place gets only the bytes of
  /// the write; a new grain is written whole (up to the extent's end), its bytes outside the
  /// write filled from the chain's current view (the parent for a delta disk, else zeros).
  private static func targets(
    _ grains: [PlannedGrain], writer: SparseExtentWriter, extent e: VMDKExtent, range: Range<UInt64>
  ) -> [WriteTarget] {
    grains.map { g in
      let grain = g.start..<min(g.start + writer.grainSize, e.length)
      return WriteTarget.unit(
        e.start + grain.lowerBound..<e.start + grain.upperBound, at: g.host, in: writer.file,
        writing: e.start + range.lowerBound..<e.start + range.upperBound, isNew: g.isNew)
    }
  }

  /// Links the new grains (their data is written); the write is then no longer in flight.
  func commitWrite(_ prepared: PreparedWrite) throws {
    guard let pending = prepared.token as? Pending else { return }
    do {
      defer { pending.finish(writers) }
      for (index, grains) in pending.sparse {
        if case .sparse(let writer) = writers[index] { try writer.link(grains) }
      }
    }
    try writeBackIfOverBudget()
  }

  /// Drops a prepared write: its new grains are never linked (leaked space in the file).
  func abortWrite(_ prepared: PreparedWrite) {
    (prepared.token as? Pending)?.finish(writers)
  }

  /// When dirty tables pass three quarters of the chain's cache, the sparse extents with dirty
  /// tables write back (in order) so that they become evictable.
  private func writeBackIfOverBudget() throws {
    guard cache.isMostlyDirty else { return }
    for writer in writers {
      if case .sparse(let s) = writer { try s.writeBack(ifOverBudget: true) }
    }
  }

  /// Whole grains of sparse extents become zeros where the format can say so (see
  /// `SparseWriteState.zeroGrains`); the rest (flat extents, partial grains, grains that need
  /// zeros written) goes back to the engine.
  func discard(at offset: UInt64, length requested: UInt64, mode: DiscardMode) throws -> [Range<UInt64>] {
    guard offset < virtualSize, requested > 0 else { return [] }
    let length = min(requested, virtualSize - offset)
    try beginChange()
    var leftovers: [Range<UInt64>] = []
    for (index, range) in pieces(extents, from: offset, to: offset + length) {
      let e = extents[index]
      guard case .sparse(let writer) = writers[index] else {
        leftovers.append(e.start + range.lowerBound..<e.start + range.upperBound)
        continue
      }
      let g = writer.grainSize
      let start = (range.lowerBound + g - 1) / g * g
      // The extent's last grain counts as whole when the range reaches the extent's end.
      let stop = range.upperBound == e.length ? e.length : range.upperBound / g * g
      guard start < stop else {
        leftovers.append(e.start + range.lowerBound..<e.start + range.upperBound)
        continue
      }
      if range.lowerBound < start { leftovers.append(e.start + range.lowerBound..<e.start + start) }
      for rest in try writer.zeroGrains(from: start, to: stop, hasBacking: hasBacking) {
        leftovers.append(e.start + rest.lowerBound..<e.start + rest.upperBound)
      }
      if stop < range.upperBound { leftovers.append(e.start + stop..<e.start + range.upperBound) }
    }
    try writeBackIfOverBudget()
    return leftovers.sorted { $0.lowerBound < $1.lowerBound }
  }

  /// Writes back every sparse extent and syncs every file written since its last sync.
  func flush() throws {
    for writer in writers {
      switch writer {
      case .flat(let file, _, let written):
        if written.flag.exchange(false, ordering: .acquiringAndReleasing) {
          do {
            try file.dataSync()
          } catch {
            written.flag.store(true, ordering: .releasing)
            throw error
          }
        }
      case .sparse(let s):
        try s.flush()
      }
    }
  }

  func resize(to newSize: UInt64, allowShrink: Bool) throws {
    throw VDiskError.unsupported(
      path, "vmdk images cannot be resized (QEMU's vmdk driver cannot either); convert to qcow2 or raw first")
  }
}
