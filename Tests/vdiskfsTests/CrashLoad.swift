import CLinux
import Foundation
import Synchronization
import TestSupport

/// One crash point of the crash campaign (`CrashCampaignMountTests`): a seeded mixed load on
/// disk.raw of a `KillableMount` — writes of 512 B to 1 MiB (sector-aligned, page-aligned and
/// not), fsyncs, and discards (`fallocate` PUNCH_HOLE|KEEP_SIZE and ZERO_RANGE) — while a second
/// thread sends the daemon SIGKILL at a seeded moment: a delay after a chosen operation has
/// started, so that kills land in the middle of a large write, of an fsync or of a discard as
/// well as between operations.
///
/// A `DurabilityModel` records what was acknowledged: every write and discard started was
/// attempted, and a completed fsync made all those before it durable (a discarded range must
/// then read as zeros). Writes and discards between two fsyncs never overlap (the model's rule):
/// the generator picks another place, and issues an fsync when it finds none.
///
/// The operations depend on the seed alone; where the kill lands also depends on timing, so a
/// rerun of a seed repeats the load exactly and the kill approximately.
struct CrashLoad {
  /// What the load was doing when the kill was sent.
  enum Moment: Int, CaseIterable, Sendable, CustomStringConvertible {
    case idle, write, fsync, discard
    var description: String { ["idle", "mid-write", "mid-fsync", "mid-discard"][rawValue] }
  }

  /// The result of a run: the model to judge the image by, and figures for the campaign.
  struct Outcome {
    var model: DurabilityModel
    var landed: Moment
    /// Operations started (the last one may have been cut by the kill).
    var operations: Int
    /// fsyncs that completed.
    var fsyncs: Int
    /// Bytes of writes and discards that a completed fsync acknowledged.
    var acknowledgedBytes: Int
  }

  /// Largest write (and half the largest discard).
  static let maxWrite = 1 << 20

  let seed: UInt64
  /// The guest disk's size in bytes.
  let size: Int

  private enum Operation {
    case write(offset: Int, bytes: [UInt8])
    case fsync
    case discard(offset: Int, length: Int, punch: Bool)

    var moment: Moment {
      switch self {
      case .write: .write
      case .fsync: .fsync
      case .discard: .discard
      }
    }
  }

  /// The kill: `delay` microseconds after operation `afterStart` started.
  var killPlan: (afterStart: Int, delay: UInt32) {
    var rng = SplitMix64(seed: seed ^ 0x6B69_6C6C)
    let afterStart = 3 + Int(rng.next() % 40)
    let ceiling: [UInt64] = [1, 1000, 10_000, 100_000]
    return (afterStart, UInt32(rng.next() % ceiling[Int(rng.next() % 4)]))
  }

  /// Runs the load on `mount` (whose guest bytes are `initial`) until the kill; the daemon has
  /// been sent SIGKILL when this returns (`mount.tearDown()` waits for it to be gone). Throws
  /// when an operation fails before the kill.
  func run(on mount: KillableMount, initial: [UInt8]) throws -> Outcome {
    precondition(initial.count == size)
    let plan = killPlan
    // Made beforehand (their bytes too), so that the loop below does I/O and little else.
    let operations = self.operations(plan.afterStart + 300)
    let clock = KillClock()
    let started = DispatchSemaphore(value: 0)
    let done = DispatchSemaphore(value: 0)
    Thread.detachNewThread {
      started.wait()
      if !clock.cancelled.load(ordering: .acquiring) {
        if plan.delay > 0 { usleep(plan.delay) }
        clock.landed.store(clock.phase.load(ordering: .acquiring), ordering: .releasing)
        clock.killed.store(true, ordering: .releasing)
        mount.kill()
      }
      done.signal()
    }
    var signalled = false
    defer {
      if !signalled {
        clock.cancelled.store(true, ordering: .releasing)
        started.signal()
      }
      done.wait()
    }

    var count = 0  // operations started
    var lastFailed = false
    let fd = mount.disk.fd
    for operation in operations {
      if clock.killed.load(ordering: .acquiring) { break }
      if count == plan.afterStart {
        started.signal()
        signalled = true
      }
      count += 1
      clock.phase.store(operation.moment.rawValue, ordering: .releasing)
      let error = perform(operation, fd: fd)
      clock.phase.store(Moment.idle.rawValue, ordering: .releasing)
      if error != 0 {
        // The kill flag is set before the signal: an error without it is the daemon's own.
        guard clock.killed.load(ordering: .acquiring) else {
          throw CrashLoadFailed(seed: seed, operation: count, errorNumber: error)
        }
        lastFailed = true
        break
      }
    }
    done.wait()  // (the load may have run out of operations before the kill: idle)
    done.signal()  // for the deferred wait

    // The model: every operation started was attempted; every fsync that completed (all but a
    // failed last one, even one that returned just before the kill) acknowledged.
    var outcome = Outcome(
      model: DurabilityModel(initial),
      landed: Moment(rawValue: clock.landed.load(ordering: .acquiring)) ?? .idle,
      operations: count, fsyncs: 0, acknowledgedBytes: 0)
    var pendingBytes = 0
    for (index, operation) in operations.prefix(count).enumerated() {
      switch operation {
      case .write(let offset, let bytes):
        outcome.model.attempt(bytes, at: offset)
        pendingBytes += bytes.count
      case .discard(let offset, let length, _):
        outcome.model.attempt([UInt8](repeating: 0, count: length), at: offset)
        pendingBytes += length
      case .fsync:
        guard index < count - 1 || !lastFailed else { break }
        outcome.model.flushed()
        outcome.fsyncs += 1
        outcome.acknowledgedBytes += pendingBytes
        pendingBytes = 0
      }
    }
    return outcome
  }

  /// The first `count` operations of the seed's load.
  private func operations(_ count: Int) -> [Operation] {
    var rng = SplitMix64(seed: seed)
    var pending: [Range<Int>] = []
    var serial: UInt64 = 0
    var operations: [Operation] = []
    for _ in 0..<count {
      let operation = next(&rng, pending: &pending, serial: &serial)
      if case .fsync = operation { pending = [] }
      operations.append(operation)
    }
    return operations
  }

  /// The next operation: 60 % writes, 18 % fsyncs, 22 % discards, the ranges of writes and
  /// discards apart from `pending` (the ranges since the last fsync, which this extends).
  private func next(_ rng: inout SplitMix64, pending: inout [Range<Int>], serial: inout UInt64) -> Operation {
    let roll = rng.next() % 100
    guard roll < 82 else { return .fsync }
    let isWrite = roll < 60
    let ceiling = isWrite ? 512 << Int(rng.next() % 12) : 4096 << Int(rng.next() % 10)
    let unalignedLength = rng.next() % 2 == 0
    let length = min(
      unalignedLength ? 512 + Int(rng.next() % UInt64(ceiling)) : ceiling,
      isWrite ? Self.maxWrite : 2 * Self.maxWrite)
    let alignment = [4096, 512, 1][Int(rng.next() % 3)]
    for _ in 0..<16 {
      let offset = Int(rng.next() % UInt64(size - length + 1)) / alignment * alignment
      let range = offset..<offset + length
      guard !pending.contains(where: { $0.overlaps(range) }) else { continue }
      pending.append(range)
      if isWrite {
        serial += 1
        return .write(offset: offset, bytes: pattern(length, serial: serial ^ seed << 16))
      }
      return .discard(offset: offset, length: length, punch: rng.next() % 2 == 0)
    }
    return .fsync
  }

  /// Issues `operation` on `fd`: 0, or the error (EIO for a short write).
  private func perform(_ operation: Operation, fd: Int32) -> Int32 {
    switch operation {
    case .write(let offset, let bytes):
      let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
      return n == bytes.count ? 0 : (n < 0 ? errno : EIO)
    case .fsync:
      return fsync(fd) == 0 ? 0 : errno
    case .discard(let offset, let length, let punch):
      let mode =
        punch ? clinux_falloc_fl_punch_hole | clinux_falloc_fl_keep_size : clinux_falloc_fl_zero_range
      return clinux_fallocate(fd, mode, Int64(offset), Int64(length)) == 0 ? 0 : errno
    }
  }
}

/// What the load thread and the killer share.
private final class KillClock: Sendable {
  /// The `CrashLoad.Moment` of the operation in progress.
  let phase = Atomic<Int>(CrashLoad.Moment.idle.rawValue)
  /// `phase` when the kill was sent.
  let landed = Atomic<Int>(CrashLoad.Moment.idle.rawValue)
  /// Set just before the SIGKILL.
  let killed = Atomic<Bool>(false)
  /// The load ended (an error) before the kill: the killer must not kill.
  let cancelled = Atomic<Bool>(false)
}

/// An operation of the load failed while the daemon was alive.
struct CrashLoadFailed: Error, CustomStringConvertible {
  let seed: UInt64
  let operation: Int
  let errorNumber: Int32
  var description: String {
    "seed \(seed): operation \(operation) failed before the kill: \(String(cString: strerror(errorNumber)))"
  }
}
