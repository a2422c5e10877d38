extension RandomAccessCollection where Index == Int {
  /// In a collection sorted by where each element starts (`start`), the index of the last element
  /// that starts at or before `offset` (a binary search); the first index when none does. Layers
  /// made of consecutive pieces (VMDK extents, a Parallels bundle's storages) find the piece that
  /// holds a guest offset with it.
  public func lastIndex(startingAtOrBefore offset: UInt64, start: (Element) -> UInt64) -> Int {
    var low = startIndex
    var high = Swift.max(startIndex, endIndex - 1)
    while low < high {
      let middle = low + (high - low + 1) / 2
      if start(self[middle]) <= offset { low = middle } else { high = middle - 1 }
    }
    return low
  }
}
