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
