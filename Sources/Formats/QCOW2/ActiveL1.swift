import VDiskCore

/// The active L1 table as readers of a writable layer see it (qcow2 spec, "Cluster mapping"): the
/// writer's committed entries, mirrored here whenever it changes one. A lookup takes a shared lock
/// for one array read; readers never take the writer's lock.
///
/// `@unchecked Sendable`: `entries` is only touched under `lock`.
final class ActiveL1: @unchecked Sendable {
  private let lock = ReadWriteLock()
  private var entries: [UInt64]

  init(_ entries: [UInt64]) {
    self.entries = entries
  }

  /// Entry `index` as stored (0, unallocated, past the end).
  func entry(_ index: Int) -> UInt64 {
    lock.withReadLock { index < entries.count ? entries[index] : 0 }
  }

  func set(_ index: Int, _ value: UInt64) {
    lock.withWriteLock { entries[index] = value }
  }

  /// Replaces the whole table (after it grew).
  func replace(with all: [UInt64]) {
    lock.withWriteLock { entries = all }
  }
}
