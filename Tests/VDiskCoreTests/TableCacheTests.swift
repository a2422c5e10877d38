import Testing
import VDiskCore

@Suite struct TableCacheTests {
  @Test func evictsLeastRecentlyUsedFirst() {
    let cache = TableCache<Int, String>(budget: 30)
    cache.insert(1, "a", cost: 10)
    cache.insert(2, "b", cost: 10)
    cache.insert(3, "c", cost: 10)
    #expect(cache.keysByRecency == [3, 2, 1])
    // Touch 1 so that 2 becomes the least recently used.
    #expect(cache.get(1) == "a")
    #expect(cache.keysByRecency == [1, 3, 2])
    cache.insert(4, "d", cost: 10)
    #expect(cache.get(2) == nil)
    #expect(cache.keysByRecency == [4, 1, 3])
    #expect(cache.statistics.evictions == 1)
  }

  @Test func staysWithinBudget() {
    let cache = TableCache<Int, [UInt8]>(budget: 1000)
    var rng = SystemRandomNumberGenerator()
    for key in 0..<500 {
      let cost = Int.random(in: 1...300, using: &rng)
      cache.insert(key, [], cost: cost)
      #expect(cache.totalCost <= 1000)
    }
    #expect(cache.count > 0)
  }

  @Test func evictsSeveralToMakeRoomForALargeEntry() {
    let cache = TableCache<Int, Int>(budget: 100)
    for key in 0..<10 { cache.insert(key, key, cost: 10) }
    cache.insert(99, 99, cost: 55)
    #expect(cache.totalCost <= 100)
    #expect(cache.keysByRecency == [99, 9, 8, 7, 6])
  }

  @Test func keepsASingleOversizedEntryAlone() {
    let cache = TableCache<Int, Int>(budget: 10)
    cache.insert(1, 1, cost: 5)
    cache.insert(2, 2, cost: 50)
    #expect(cache.keysByRecency == [2])
    #expect(cache.get(2) == 2)
    cache.insert(3, 3, cost: 5)
    #expect(cache.keysByRecency == [3])
  }

  @Test func replacingAKeyUpdatesCostAndRecency() {
    let cache = TableCache<String, Int>(budget: 100)
    cache.insert("x", 1, cost: 40)
    cache.insert("y", 2, cost: 40)
    cache.insert("x", 3, cost: 10)
    #expect(cache.totalCost == 50)
    #expect(cache.keysByRecency == ["x", "y"])
    #expect(cache.get("x") == 3)
  }

  @Test func loadsOnMissOnly() throws {
    let cache = TableCache<Int, Int>(budget: 100)
    var loads = 0
    for _ in 0..<5 {
      let v = cache.value(for: 7, cost: 1) {
        loads += 1
        return 42
      }
      #expect(v == 42)
    }
    #expect(loads == 1)
    #expect(cache.statistics.hits == 4)
    #expect(cache.statistics.misses == 1)
  }

  @Test func removeAndRemoveAll() {
    let cache = TableCache<Int, Int>(budget: 100)
    for key in 0..<5 { cache.insert(key, key, cost: 10) }
    cache.remove(2)
    #expect(cache.keysByRecency == [4, 3, 1, 0])
    #expect(cache.totalCost == 40)
    cache.removeAll()
    #expect(cache.count == 0)
    #expect(cache.totalCost == 0)
    cache.insert(1, 1, cost: 10)
    #expect(cache.keysByRecency == [1])
  }

  @Test func concurrentUseKeepsInvariants() async {
    let cache = TableCache<Int, Int>(budget: 64)
    await withTaskGroup(of: Void.self) { group in
      for worker in 0..<8 {
        group.addTask {
          for i in 0..<2000 {
            let key = (i * 7 + worker) % 100
            if cache.get(key) == nil { cache.insert(key, key, cost: 1) }
          }
        }
      }
    }
    #expect(cache.totalCost <= 64)
    #expect(cache.count == cache.keysByRecency.count)
  }
}

@Suite struct TableCacheDirtyTests {
  @Test func dirtyEntriesStayUntilMarkedClean() {
    let cache = TableCache<Int, Int>(budget: 30)
    cache.insert(1, 1, cost: 10, dirty: true)
    cache.insert(2, 2, cost: 10, dirty: true)
    for key in 3..<10 { cache.insert(key, key, cost: 10) }
    // Clean entries were evicted to make room; the dirty ones stayed, though over budget.
    #expect(cache.get(1) == 1 && cache.get(2) == 2)
    #expect(cache.dirtyCost == 20)
    #expect(cache.totalCost <= 30)
    #expect(Set(cache.dirtyEntries { _ in true }.map(\.key)) == [1, 2])
    cache.markClean(1)
    #expect(cache.dirtyCost == 10)
    for key in 10..<20 { cache.insert(key, key, cost: 10) }
    // Clean now, 1 is evicted like any other entry; 2 is still dirty and still there.
    #expect(cache.get(1) == nil)
    #expect(cache.get(2) == 2)
  }

  @Test func dirtyEntriesAloneMayExceedTheBudget() {
    let cache = TableCache<Int, Int>(budget: 10)
    for key in 0..<5 { cache.insert(key, key, cost: 10, dirty: true) }
    #expect(cache.count == 5)
    #expect(cache.dirtyCost == 50)
    for key in 0..<5 { cache.markClean(key) }
    // Marking clean evicts what no longer fits, keeping the newest.
    #expect(cache.totalCost <= 10)
    #expect(cache.dirtyCost == 0)
  }

  @Test func aLoadNeverReplacesWhatAnotherThreadCached() {
    let cache = TableCache<Int, Int>(budget: 100)
    let got = cache.value(for: 1, cost: 1) {
      // Meanwhile a writer caches a changed (dirty) table under the same key.
      cache.insert(1, 42, cost: 1, dirty: true)
      return 7
    }
    #expect(got == 42)
    #expect(cache.get(1) == 42)
    #expect(cache.dirtyCost == 1)
  }

  @Test func aLoadOverlappingAWriteBackIsRepeated() {
    let cache = TableCache<Int, Int>(budget: 100)
    var loads = 0
    let got = cache.value(for: 1, cost: 1) {
      loads += 1
      if loads == 1 {
        // The table is written back (and then evicted) while this load reads the file.
        cache.writingBack {}
        return -1
      }
      return 5
    }
    #expect(loads == 2)
    #expect(got == 5)
    #expect(cache.get(1) == 5)
  }
}
