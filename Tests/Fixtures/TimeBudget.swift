import Foundation

/// How much longer wall-clock budgets in tests may be: `$VDISKFS_TEST_TIME_SCALE` (at least 1,
/// default 1). Budgets check bounded work ("a hostile table is read in under a second"); under a
/// sanitizer (scripts/sanitize.sh sets the scale) the same work is several times slower, and a
/// scaled budget still tells bounded work from work an image makes unbounded.
public let testTimeScale: Double = {
  guard let text = ProcessInfo.processInfo.environment["VDISKFS_TEST_TIME_SCALE"],
    let scale = Double(text), scale >= 1
  else { return 1 }
  return scale
}()

/// A budget of `seconds`, scaled by `testTimeScale`.
public func timeBudget(_ seconds: Double) -> Double { seconds * testTimeScale }

/// A budget of `duration`, scaled by `testTimeScale`.
public func timeBudget(_ duration: Duration) -> Duration { duration * testTimeScale }
