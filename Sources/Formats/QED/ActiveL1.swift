import VDiskCore

/// The L1 entries a QED disk uses, as the writer has linked them: read on every lookup (shared,
/// so concurrent readers never wait for each other), changed by a commit or a resize
/// (exclusive). No I/O happens under the lock.
final class QEDActiveL1: @unchecked Sendable {
  // @unchecked: `entries` is only touched with `lock` held.
  private let lock = ReadWriteLock()
  private var entries: [UInt64]

  init(_ entries: [UInt64]) {
    self.entries = entries
  }

  /// Entry `index` (`index < count`).
  subscript(index: Int) -> UInt64 { lock.withReadLock { entries[index] } }

  var count: Int { lock.withReadLock { entries.count } }

  /// The entries at `indices`, read together.
  func values(_ indices: [Int]) -> [UInt64] { lock.withReadLock { indices.map { entries[$0] } } }

  func set(_ index: Int, to value: UInt64) { lock.withWriteLock { entries[index] = value } }

  /// Adds `count` unallocated entries at the end (a grown disk).
  func append(zeros count: Int) { lock.withWriteLock { entries += [UInt64](repeating: 0, count: count) } }
}
