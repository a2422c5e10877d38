import Synchronization

/// Bounds how many error lines failing requests write: a loop device or a backup tool retrying a
/// corrupt range would otherwise flood syslog with one line per request. Allows `burst` lines per
/// `window`; when a window closes with lines held back, the next line says how many.
final class ErrorLogLimiter: Sendable {
  private struct State {
    var windowStart: UInt64 = 0
    var logged = 0
    var suppressed = 0
  }

  let burst: Int
  let windowNanoseconds: UInt64
  private let state = Mutex(State())
  private let now: @Sendable () -> UInt64

  init(
    burst: Int = 5, windowSeconds: Double = 10,
    now: @escaping @Sendable () -> UInt64 = { DispatchTimeLike.monotonicNanoseconds() }
  ) {
    self.burst = burst
    self.windowNanoseconds = UInt64(windowSeconds * 1e9)
    self.now = now
  }

  /// Whether to log a line now, and how many earlier lines were held back (to mention).
  func admit() -> (log: Bool, suppressedBefore: Int) {
    let t = now()
    return state.withLock { s in
      var suppressedBefore = 0
      if t &- s.windowStart >= windowNanoseconds {
        suppressedBefore = s.suppressed
        s = State(windowStart: t, logged: 0, suppressed: 0)
      }
      guard s.logged < burst else {
        s.suppressed += 1
        return (false, 0)
      }
      s.logged += 1
      return (true, suppressedBefore)
    }
  }
}

#if canImport(Glibc)
  import Glibc
#endif

/// The monotonic clock, without Foundation or Dispatch.
enum DispatchTimeLike {
  static func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
  }
}
