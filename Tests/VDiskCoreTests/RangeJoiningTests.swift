import Testing
import VDiskCore

@Suite struct RangeJoiningTests {
  @Test func adjacentRangesJoinAndGapsSplit() {
    var ranges: [Range<UInt64>] = []
    ranges.appendJoining(0..<4)
    ranges.appendJoining(4..<9)
    ranges.appendJoining(10..<12)
    ranges.appendJoining(12..<12)
    #expect(ranges == [0..<9, 10..<12])
  }

  @Test func setRunsAreMaximalAndAscending() {
    #expect(Set([7, 1, 2, 3, 9, 8, 5]).runs == [1..<4, 5..<6, 7..<10])
    #expect(Set<Int>().runs.isEmpty)
  }
}
