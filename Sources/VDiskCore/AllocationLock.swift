import Synchronization

/// One allocating write at a time, for a writer that puts new units at the end of its image (vdi:
/// the next slot; qed: the end of the file; parallels: the end of the data area). `prepareWrite`
/// takes the lock before it reads where the end is and keeps it across the write's own data I/O
/// until `commitWrite` has linked the new units or `abortWrite` has forgotten them, so two writes
/// never get the same place, and the end the next allocation reads is the one the last commit or
/// abort left. Writes into allocated units never take it. Where the end lies and how it moves
/// (back to be reused after an abort, or never: a leak) stay the writer's, in its own state, read
/// and moved with this lock held.
///
/// Each allocating write gets a `PendingAllocation` token, settled once: the engine calls
/// `abortWrite` after a failed `commitWrite`, and the lock is released exactly once either way.
public final class AllocationLock: Sendable {
  /// Its one range, 0...0, is the lock: a `RangeLocks` can be held from one call to another,
  /// which a `Mutex` cannot.
  private let held = RangeLocks()

  public init() {}

  /// Takes the lock and runs `plan`, which reads the end and places the new units. The lock stays
  /// held until `commit` or `abort` settles the token; it is released at once if `plan` throws.
  public func allocate<Plan: Sendable>(_ plan: () throws -> Plan) throws -> PendingAllocation<Plan> {
    held.acquire(0...0)
    do {
      return PendingAllocation(try plan(), holdsLock: true)
    } catch {
      held.release(0...0)
      throw error
    }
  }

  /// The token of a write that allocates nothing, for a writer that settles every write (it
  /// counts writes in flight): settled like the others, it never touches the lock.
  public func inPlace<Plan: Sendable>(_ plan: Plan) -> PendingAllocation<Plan> {
    PendingAllocation(plan, holdsLock: false)
  }

  /// Settles `pending` after its data is written: the first time, runs `link` with the lock still
  /// held (the new units are linked before the next allocation reads the end), then releases it,
  /// also when `link` throws. Returns false, running nothing, when the token was settled before.
  @discardableResult
  public func commit<Plan>(_ pending: PendingAllocation<Plan>, link: (Plan) throws -> Void) throws -> Bool {
    guard pending.settle() else { return false }
    defer { if pending.holdsLock { held.release(0...0) } }
    try link(pending.plan)
    return true
  }

  /// Settles `pending` after a failed data write (or a failed `commit`): releases the lock the
  /// first time; the writer's end says whether the places are reused or leaked. Returns false
  /// when the token was settled before.
  @discardableResult
  public func abort<Plan>(_ pending: PendingAllocation<Plan>) -> Bool {
    guard pending.settle() else { return false }
    if pending.holdsLock { held.release(0...0) }
    return true
  }

  /// Runs `body` with no allocation in flight and none starting meanwhile (qed clears its
  /// need-check flag so).
  public func excludingAllocations<R>(_ body: () throws -> R) rethrows -> R {
    held.acquire(0...0)
    defer { held.release(0...0) }
    return try body()
  }
}

/// What a prepared write allocated (`plan`, the writer's own record of what to link), as the
/// token of its `PreparedWrite`; settled exactly once, by `AllocationLock.commit` or `.abort`.
public final class PendingAllocation<Plan: Sendable>: Sendable {
  public let plan: Plan
  /// Whether the write holds the allocation lock (false for `AllocationLock.inPlace`).
  let holdsLock: Bool
  private let settled = Atomic<Bool>(false)

  init(_ plan: Plan, holdsLock: Bool) {
    self.plan = plan
    self.holdsLock = holdsLock
  }

  /// True the first time only.
  func settle() -> Bool {
    !settled.exchange(true, ordering: .acquiringAndReleasing)
  }
}
