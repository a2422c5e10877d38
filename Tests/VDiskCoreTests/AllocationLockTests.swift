import Foundation
import Synchronization
import Testing
import VDiskCore

@Suite struct AllocationLockTests {
  /// Runs `body` on another thread; the returned semaphore is signalled when it has finished.
  private func onAnotherThread(_ body: @escaping @Sendable () -> Void) -> DispatchSemaphore {
    let done = DispatchSemaphore(value: 0)
    Thread.detachNewThread {
      body()
      done.signal()
    }
    return done
  }

  /// Whether `body`, started on another thread, finishes within 100 ms (false: it still waits,
  /// and `done` is signalled when it has finished).
  private func finishesAtOnce(_ body: @escaping @Sendable () -> Void) -> (Bool, DispatchSemaphore) {
    let done = onAnotherThread(body)
    let finished = done.wait(timeout: .now() + .milliseconds(100)) == .success
    if finished { done.signal() }
    return (finished, done)
  }

  @Test func aSecondAllocationWaitsForTheFirstToCommit() throws {
    let lock = AllocationLock()
    let end = Mutex<UInt64>(0)
    let first = try lock.allocate { end.withLock { $0 } }
    let seen = Mutex<UInt64?>(nil)
    let (finished, done) = finishesAtOnce {
      let second = try? lock.allocate { end.withLock { $0 } }
      seen.withLock { $0 = second?.plan }
      if let second { lock.abort(second) }
    }
    #expect(!finished)
    #expect(seen.withLock { $0 } == nil)
    // The commit moves the end before the waiting allocation can read it.
    #expect(try lock.commit(first) { start in end.withLock { $0 = start + 4096 } })
    done.wait()
    #expect(seen.withLock { $0 } == 4096)
  }

  @Test func aTokenSettlesOnceAndReleasesOnce() throws {
    let lock = AllocationLock()
    let links = Mutex(0)
    let first = try lock.allocate { 1 }
    #expect(try lock.commit(first) { _ in links.withLock { $0 += 1 } })
    // The engine's abort after a commit, and a repeated commit, do nothing...
    let second = try lock.allocate { 2 }
    #expect(!lock.abort(first))
    #expect(try !lock.commit(first) { _ in links.withLock { $0 += 1 } })
    #expect(links.withLock { $0 } == 1)
    // ...in particular they do not release the lock the second allocation holds.
    let (finished, done) = finishesAtOnce { lock.excludingAllocations {} }
    #expect(!finished)
    #expect(lock.abort(second))
    done.wait()
  }

  @Test func aFailedPlanOrLinkReleasesTheLock() throws {
    let lock = AllocationLock()
    struct Refused: Error {}
    #expect(throws: Refused.self) { try lock.allocate { () throws -> Int in throw Refused() } }
    let pending = try lock.allocate { 1 }
    #expect(throws: Refused.self) { try lock.commit(pending) { _ in throw Refused() } }
    // Settled by the failed commit: the abort that follows it is a no-op.
    #expect(!lock.abort(pending))
    let (finished, _) = finishesAtOnce {
      if let next = try? lock.allocate({ 2 }) { lock.abort(next) }
    }
    #expect(finished)
  }

  @Test func anInPlaceTokenSettlesOnceAndNeverTouchesTheLock() throws {
    let lock = AllocationLock()
    let held = try lock.allocate { 1 }
    let inPlace = lock.inPlace(0)
    let links = Mutex(0)
    #expect(try lock.commit(inPlace) { _ in links.withLock { $0 += 1 } })
    #expect(!lock.abort(inPlace))
    #expect(links.withLock { $0 } == 1)
    let (finished, done) = finishesAtOnce { lock.excludingAllocations {} }
    #expect(!finished)
    lock.abort(held)
    done.wait()
  }
}
