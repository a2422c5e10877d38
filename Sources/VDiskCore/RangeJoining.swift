extension Array {
  /// Appends `range`, or extends the last range when `range` starts where it ends (ranges that
  /// arrive in ascending order come out joined into maximal runs).
  public mutating func appendJoining<Bound>(_ range: Range<Bound>) where Element == Range<Bound> {
    if let last, last.upperBound == range.lowerBound {
      self[count - 1] = last.lowerBound..<range.upperBound
    } else {
      append(range)
    }
  }
}

extension Set where Element == Int {
  /// The members as maximal runs of consecutive numbers, ascending.
  public var runs: [Range<Int>] {
    var result: [Range<Int>] = []
    for member in sorted() { result.appendJoining(member..<member + 1) }
    return result
  }
}
