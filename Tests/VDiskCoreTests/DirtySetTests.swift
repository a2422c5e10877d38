import Testing
import VDiskCore

@Suite struct DirtySetTests {
  @Test func aKeyChangedDuringItsWriteBackStaysDirty() {
    var set = DirtySet<Int, String>()
    set.mark(7, "a")
    set.mark(3, "b")
    let taken = set.sorted
    #expect(taken.map(\.key) == [3, 7])
    #expect(taken.map(\.detail) == ["b", "a"])
    // Changed again after the write-back took it: its newer change is not written yet.
    set.mark(7, "c")
    let cleaned = taken.map { set.clean($0) }
    #expect(cleaned == [true, false])
    #expect(set.count == 1)
    #expect(set.sorted.map(\.detail) == ["c"])
    let last = set.sorted.map { set.clean($0) }
    #expect(last == [true])
    #expect(set.isEmpty)
  }

  @Test func everyMarkIsANewGeneration() {
    var set = DirtySet<Int, Void>()
    set.mark(1)
    let first = set.sorted
    set.mark(1)
    // The same key marked twice between a take and its clean: the second mark wins.
    let stale = set.clean(first[0])
    #expect(!stale)
    let second = set.sorted
    #expect(second[0].generation > first[0].generation)
    let cleaned = set.clean(second[0])
    #expect(cleaned)
    // A stale entry of a key no longer dirty cleans nothing.
    let again = set.clean(first[0])
    #expect(!again)
    #expect(set.isEmpty)
  }
}
