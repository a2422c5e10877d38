import Testing
import VDiskCore

@Suite struct SortedStartsTests {
  @Test func findsThePieceHoldingEachOffset() {
    let starts: [UInt64] = [0, 10, 10, 25, 100]
    let expected: [(UInt64, Int)] = [(0, 0), (9, 0), (10, 2), (24, 2), (25, 3), (99, 3), (100, 4), (.max, 4)]
    for (offset, index) in expected {
      #expect(starts.lastIndex(startingAtOrBefore: offset) { $0 } == index, "offset \(offset)")
    }
  }

  @Test func oneOrNoElement() {
    #expect([UInt64(5)].lastIndex(startingAtOrBefore: 7) { $0 } == 0)
    #expect([UInt64]().lastIndex(startingAtOrBefore: 7) { $0 } == 0)
  }
}
