import Synchronization
import SystemPackage
import VDiskCore

/// A `ByteSource` over another that fails chosen operations, and can "crash": for tests of what
/// the layers do when I/O fails and of what a kill -9 between two write-back stages leaves.
///
/// Stages: every write that is performed (plain or gathering: one system call each), every
/// `synchronize` (fdatasync), every `setSize` (ftruncate) and every `extendWithZeros` (fallocate;
/// a write, for faults) counts as one write-back stage,
/// numbered from 1 in the order they reach this source. After `crash(afterStage: n)`, stages
/// 1…n are performed and every later write, sync or size change is refused with EIO and not
/// performed, so the file below holds exactly what a kill -9 right after stage n leaves (the
/// page cache survives a killed process). Reads keep working. Operations that fail by an armed
/// fault are not performed and are not stages.
///
/// Faults instead of a crash: `failReads`, `failWrites`, `failSyncs` and `failStage` make chosen
/// operations throw a chosen errno (EIO, ENOSPC…) once or a few times, after which the source
/// works again (`clearFaults` disarms what is left), as a disk with a bad sector or a file
/// system that ran full and was freed.
public final class FaultInjectingSource: ByteSource {
  /// What one stage was.
  public enum StageKind: String, Sendable, Hashable {
    case write, gatheringWrite, sync, setSize, extend
  }

  public struct Stage: Sendable, CustomStringConvertible {
    public var number: Int
    public var kind: StageKind
    public var offset: UInt64
    public var length: UInt64
    public var description: String { "stage \(number): \(kind.rawValue) \(length) at \(hex(offset))" }

    public init(number: Int, kind: StageKind, offset: UInt64, length: UInt64) {
      self.number = number
      self.kind = kind
      self.offset = offset
      self.length = length
    }
  }

  private struct Fault {
    var range: Range<UInt64>
    var ordinals: ClosedRange<Int>?
    var remaining: Int
    var error: Errno
  }

  private struct State {
    var reads = 0
    var writes = 0
    var syncs = 0
    var readFaults: [Fault] = []
    var writeFaults: [Fault] = []
    var syncFaults: [Fault] = []
    /// Stage number (`stages.count + 1` when attempted) and the error it fails with.
    var stageFaults: [(stage: Int, error: Errno)] = []
    var fired: [Fired] = []
    var crashAfter: Int?
    var stages: [Stage] = []
    var refused = 0
  }

  /// One operation an armed fault failed.
  public struct Fired: Sendable, CustomStringConvertible {
    /// `.write`/`.gatheringWrite`/`.sync`/`.setSize`/`.extend`, or nil for a read.
    public var kind: StageKind?
    public var offset: UInt64
    public var length: UInt64
    public var error: Errno
    public var description: String {
      "\(kind?.rawValue ?? "read") \(length) at \(hex(offset)) failed with \(error)"
    }
  }

  public let base: any ByteSource
  private let state = Mutex(State())

  public init(wrapping base: any ByteSource) {
    self.base = base
  }

  public var identity: SourceIdentity { base.identity }
  /// The wrapped descriptor (splice, locks and SEEK_DATA bypass the faults).
  public var fileDescriptor: FileDescriptor? { base.fileDescriptor }

  // MARK: Arming faults

  /// Fails reads number `ordinals` (the first read through this source is 1) with `error`.
  public func failReads(numbered ordinals: ClosedRange<Int>, with error: Errno = .ioError) {
    state.withLock {
      $0.readFaults.append(Fault(range: 0..<UInt64.max, ordinals: ordinals, remaining: .max, error: error))
    }
  }

  /// Fails the next `count` reads that overlap `range` with `error`.
  public func failReads(overlapping range: Range<UInt64>, count: Int = 1, with error: Errno = .ioError) {
    state.withLock {
      $0.readFaults.append(Fault(range: range, ordinals: nil, remaining: count, error: error))
    }
  }

  /// Fails the next `count` writes (plain or gathering) that overlap `range` with `error`
  /// (EIO, ENOSPC…), writing nothing.
  public func failWrites(
    overlapping range: Range<UInt64> = 0..<UInt64.max, count: Int = 1, with error: Errno = .ioError
  ) {
    state.withLock {
      $0.writeFaults.append(Fault(range: range, ordinals: nil, remaining: count, error: error))
    }
  }

  /// Fails writes number `ordinals` (counting every write attempted, the first is 1).
  public func failWrites(numbered ordinals: ClosedRange<Int>, with error: Errno = .ioError) {
    state.withLock {
      $0.writeFaults.append(Fault(range: 0..<UInt64.max, ordinals: ordinals, remaining: .max, error: error))
    }
  }

  /// Fails syncs (`fdatasync`) number `ordinals` (the first sync attempted is 1) with `error`.
  public func failSyncs(numbered ordinals: ClosedRange<Int>, with error: Errno = .ioError) {
    state.withLock {
      $0.syncFaults.append(Fault(range: 0..<UInt64.max, ordinals: ordinals, remaining: .max, error: error))
    }
  }

  /// Fails, once, the operation that would become stage number `stage` (a write, sync, size
  /// change or extension; `stages` counts them from 1) with `error`: it is not performed and is
  /// not a stage, so the next operation attempted is stage `stage` again, and succeeds. Walking
  /// `stage` over a recorded write-back sequence fails each of its operations in turn.
  public func failStage(_ stage: Int, with error: Errno) {
    state.withLock { $0.stageFaults.append((stage, error)) }
  }

  /// Disarms every fault not yet used up (a crash point stays).
  public func clearFaults() {
    state.withLock {
      $0.readFaults = []
      $0.writeFaults = []
      $0.syncFaults = []
      $0.stageFaults = []
    }
  }

  /// Performs stages up to number `stage` (counted from the first stage of this source) and
  /// refuses every later one; `crash(afterStage: 0)` refuses them all.
  public func crash(afterStage stage: Int) {
    state.withLock { $0.crashAfter = stage }
  }

  // MARK: What happened

  /// Stages performed so far, in order.
  public var stages: [Stage] { state.withLock { $0.stages } }
  /// Writes, syncs and size changes refused because of the crash.
  public var refusedAfterCrash: Int { state.withLock { $0.refused } }
  /// Reads attempted so far.
  public var readCount: Int { state.withLock { $0.reads } }
  /// Operations armed faults failed, in order.
  public var fired: [Fired] { state.withLock { $0.fired } }

  // MARK: ByteSource

  public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
    let failure = state.withLock { s -> Errno? in
      s.reads += 1
      let error = Self.take(&s.readFaults, ordinal: s.reads, offset, UInt64(buffer.count))
      if let error {
        s.fired.append(Fired(kind: nil, offset: offset, length: UInt64(buffer.count), error: error))
      }
      return error
    }
    if let failure { throw failure }
    return try base.read(into: buffer, at: offset)
  }

  public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
    try stage(.write, offset, UInt64(buffer.count), isWrite: true) { try base.write(buffer, at: offset) }
  }

  public func write(gathering buffers: [UnsafeRawBufferPointer], at offset: UInt64) throws {
    let length = UInt64(buffers.reduce(0) { $0 + $1.count })
    try stage(.gatheringWrite, offset, length, isWrite: true) {
      try base.write(gathering: buffers, at: offset)
    }
  }

  public func synchronize() throws {
    try stage(.sync, 0, 0, isWrite: false) { try base.synchronize() }
  }

  public func size() throws -> UInt64 { try base.size() }

  public func setSize(_ size: UInt64) throws {
    try stage(.setSize, size, 0, isWrite: false) { try base.setSize(size) }
  }

  public func extendWithZeros(from offset: UInt64, to end: UInt64) throws {
    try stage(.extend, offset, end - offset, isWrite: true) {
      try base.extendWithZeros(from: offset, to: end)
    }
  }

  public func status() throws -> FileStatus { try base.status() }

  public func allocation(at offset: UInt64) -> HostAllocation? { base.allocation(at: offset) }

  /// Checks armed faults and the crash point, then performs `body` as the next stage. Holds the
  /// lock across `body`, so that stage numbers are the order operations reached the file.
  private func stage(
    _ kind: StageKind, _ offset: UInt64, _ length: UInt64, isWrite: Bool, _ body: () throws -> Void
  ) throws {
    try state.withLock { s in
      func fail(_ error: Errno) -> Errno {
        s.fired.append(Fired(kind: kind, offset: offset, length: length, error: error))
        return error
      }
      if isWrite {
        s.writes += 1
        if let error = Self.take(&s.writeFaults, ordinal: s.writes, offset, length) { throw fail(error) }
      }
      if kind == .sync {
        s.syncs += 1
        if let error = Self.take(&s.syncFaults, ordinal: s.syncs, offset, length) { throw fail(error) }
      }
      if let i = s.stageFaults.firstIndex(where: { $0.stage == s.stages.count + 1 }) {
        throw fail(s.stageFaults.remove(at: i).error)
      }
      if let limit = s.crashAfter, s.stages.count >= limit {
        s.refused += 1
        throw Errno.ioError
      }
      try body()
      s.stages.append(Stage(number: s.stages.count + 1, kind: kind, offset: offset, length: length))
    }
  }

  /// The error of the first armed fault that matches operation number `ordinal` over
  /// `[offset, offset + length)`, used up by one; nil when none matches.
  private static func take(_ faults: inout [Fault], ordinal: Int, _ offset: UInt64, _ length: UInt64)
    -> Errno?
  {
    let (sum, overflow) = offset.addingReportingOverflow(max(length, 1))
    let end = overflow ? UInt64.max : sum
    for i in faults.indices where faults[i].remaining > 0 {
      let f = faults[i]
      let matches =
        if let ordinals = f.ordinals { ordinals.contains(ordinal) } else {
          offset < f.range.upperBound && end > f.range.lowerBound
        }
      guard matches else { continue }
      if f.remaining != .max { faults[i].remaining -= 1 }
      return f.error
    }
    return nil
  }
}
