import Synchronization

/// The write-back of a writer whose new units go to places nothing names yet (the end of the
/// image: vdi, qed, parallels), in this order:
///
/// 1. `fdatasync`: the data of every linked unit (and the size of a file extended for it) is
///    durable before any table entry names it;
/// 2. the dirty tables (the writer's `write`, `pwrite`s only);
/// 3. `fdatasync`, and only then are the written tables marked clean.
///
/// A crash before step 2 ends leaves units no entry names (space leaked at worst, reused or
/// reported as a leak by `qemu-img check`), never an entry naming unwritten data: that is why the
/// data sync comes first, whatever the tables. With nothing dirty, a flush is one `fdatasync`
/// and a write-back for room is none.
///
/// Write-backs run one at a time (the serial lock is held across the syncs); the writer's own
/// mutex is taken only inside `take` and `written`, so no `fdatasync` runs under it and writers
/// go on meanwhile. A table changed again after `take` stays dirty for the next write-back (the
/// writer's `written` compares generations).
public final class DataFirstWriteback: Sendable {
  public let file: ImageFile
  private let serial = Mutex<Void>(())

  public init(file: ImageFile) {
    self.file = file
  }

  /// One write-back (see above). `take`: under the writer's mutex, a snapshot of the dirty
  /// tables, or nil when there is nothing to write (for a write-back for room: when the dirty
  /// tables no longer need it). `write`: writes the snapshot's tables, no sync. `written`: under
  /// the writer's mutex, marks clean what the snapshot wrote and has not changed since.
  /// `syncIfClean`: whether a call that finds nothing to write still syncs (a flush).
  public func run<Snapshot>(
    syncIfClean: Bool, take: () throws -> Snapshot?, write: (Snapshot) throws -> Void,
    written: (Snapshot) -> Void
  ) throws {
    try serial.withLock { _ in
      guard let snapshot = try take() else {
        if syncIfClean { try file.dataSync() }
        return
      }
      try file.dataSync()
      try write(snapshot)
      try file.dataSync()
      written(snapshot)
    }
  }
}
