import Foundation
import RemoteStore
import Synchronization
import Testing
import VDiskCore

@Suite struct BlockCacheTests {
  let blockSize = 64 << 10

  func source(_ object: ScriptedObject, budget: Int = 64 << 20, workers: FetchWorkers = FetchWorkers())
    -> CachedRemoteSource
  {
    var options = RemoteOptions()
    options.retries = 3
    return CachedRemoteSource(
      object, cache: BlockCache(budget: budget, blockSize: blockSize), workers: workers, options: options)
  }

  func read(_ source: CachedRemoteSource, _ offset: Int, _ count: Int) throws -> [UInt8] {
    var out = [UInt8](repeating: 0, count: count)
    let n = try out.withUnsafeMutableBytes { try source.read(into: $0, at: UInt64(offset)) }
    return Array(out[..<n])
  }

  @Test func readsAcrossBlocksAndAtTheEndMatchTheObject() throws {
    let bytes = patternBytes(5 * blockSize + 1234)
    let src = source(ScriptedObject(bytes))
    for (offset, count) in [
      (0, 10), (blockSize - 3, 7), (100, 3 * blockSize), (bytes.count - 50, 100), (0, bytes.count),
    ] {
      let got = try read(src, offset, count)
      #expect(
        got == Array(bytes[offset..<min(bytes.count, offset + count)]), "offset \(offset) count \(count)")
    }
    #expect(try read(src, bytes.count, 10).isEmpty)
    #expect(try src.size() == UInt64(bytes.count))
  }

  @Test func aBlockIsFetchedOnceAndServedFromMemoryAfterwards() throws {
    let object = ScriptedObject(patternBytes(4 * blockSize))
    let src = source(object)
    for _ in 0..<5 { _ = try read(src, 10, 4096) }
    #expect(object.fetches == 1)
  }

  @Test func concurrentMissesOnOneBlockFetchItOnce() throws {
    let bytes = patternBytes(2 * blockSize)
    let object = ScriptedObject(bytes)
    object.script.withLock { $0.delayMicroseconds = 200_000 }
    let src = source(object)
    let results = Mutex<[[UInt8]]>([])
    DispatchQueue.concurrentPerform(iterations: 8) { i in
      let got = (try? read(src, 100 * i, 4096)) ?? []
      results.withLock { $0.append(got) }
    }
    #expect(object.fetches == 1)
    #expect(results.withLock { $0.count } == 8)
    for (i, got) in results.withLock({ $0 }).enumerated() where got.count != 4096 {
      Issue.record("reader \(i) got \(got.count) bytes")
    }
  }

  @Test func transientFailuresAreRetriedThenTheReadFailsAndLaterReadsRecover() throws {
    let bytes = patternBytes(2 * blockSize)
    let object = ScriptedObject(bytes)
    let src = source(object)
    object.script.withLock { $0.transientFailures = 2 }
    #expect(try read(src, 0, 100) == Array(bytes[0..<100]))
    object.script.withLock { $0.transientFailures = 10 }
    let error = #expect(throws: VDiskError.self) { try read(src, blockSize, 100) }
    #expect(error?.kind == .io)
    #expect(error?.detail.contains("failed after 4 tries") == true, "\(String(describing: error))")
    object.script.withLock { $0.transientFailures = 0 }
    #expect(try read(src, blockSize, 100) == Array(bytes[blockSize..<(blockSize + 100)]))
  }

  @Test func aChangedObjectFailsEveryLaterRead() throws {
    let object = ScriptedObject(patternBytes(3 * blockSize))
    let src = source(object)
    _ = try read(src, 0, 10)
    object.script.withLock { $0.changed = true }
    #expect(throws: VDiskError.self) { try read(src, blockSize, 10) }
    object.script.withLock { $0.changed = false }
    // Even a cached block: no mixing of two versions.
    let error = #expect(throws: VDiskError.self) { try read(src, 0, 10) }
    #expect(error?.detail.contains("changed since it was opened") == true)
  }

  @Test func theBudgetEvictsTheLeastRecentlyUsedBlocks() throws {
    let bytes = patternBytes(8 * blockSize)
    let object = ScriptedObject(bytes)
    let src = source(object, budget: 2 * blockSize)
    for block in 0..<4 { _ = try read(src, block * blockSize, 10) }
    #expect(object.fetches == 4)
    _ = try read(src, 3 * blockSize, 10)  // still cached
    #expect(object.fetches == 4)
    #expect(try read(src, 0, 10) == Array(bytes[0..<10]))  // evicted, fetched again
    #expect(object.fetches == 5)
  }

  @Test func sequentialReadersArePrefetchedInParallel() throws {
    let bytes = patternBytes(64 * blockSize)
    let object = ScriptedObject(bytes)
    let workers = FetchWorkers()
    workers.start(threads: 4)
    let cache = BlockCache(budget: 64 << 20, blockSize: blockSize)
    let src = CachedRemoteSource(object, cache: cache, workers: workers, options: RemoteOptions())
    // A short run (file-system metadata, one kernel read-ahead window) fetches only what it reads.
    var offset = 0
    for _ in 0..<8 {
      #expect(try read(src, offset, 32 << 10) == Array(bytes[offset..<(offset + (32 << 10))]))
      offset += 32 << 10
    }
    for _ in 0..<100 where !(cache.isIdle && workers.backlog == 0) { usleep(10_000) }
    #expect(object.fetches == 4)
    // A long one is fetched ahead.
    for _ in 0..<12 {
      #expect(try read(src, offset, 32 << 10) == Array(bytes[offset..<(offset + (32 << 10))]))
      offset += 32 << 10
    }
    // Wait for the prefetch to settle, then the next blocks are served without a fetch.
    for _ in 0..<1000 where !(cache.isIdle && workers.backlog == 0) { usleep(10_000) }
    let fetched = object.fetches
    #expect(fetched >= 8, "prefetched \(fetched) blocks")
    #expect(try read(src, 12 * blockSize, 10) == Array(bytes[(12 * blockSize)..<(12 * blockSize + 10)]))
    // Served from what was prefetched: no block was fetched twice.
    let offsets = object.script.withLock { $0.fetchedOffsets }
    #expect(Set(offsets).count == offsets.count)
  }

  @Test func writesGoThroughAndPatchTheCachedBlock() throws {
    let bytes = patternBytes(4 * blockSize)
    let object = ScriptedObject(bytes, writable: true)
    let src = source(object)
    _ = try read(src, 0, 2 * blockSize)
    let fetches = object.fetches
    let new = [UInt8](repeating: 0xAB, count: 100)
    try new.withUnsafeBytes { try src.write($0, at: UInt64(blockSize - 50)) }
    var expected = bytes
    expected.replaceSubrange((blockSize - 50)..<(blockSize + 50), with: new)
    #expect(try read(src, 0, 2 * blockSize) == Array(expected[0..<(2 * blockSize)]))
    #expect(object.fetches == fetches)
    #expect(object.script.withLock { $0.bytes } == expected)
    // A write past the end grows the object first.
    try new.withUnsafeBytes { try src.write($0, at: UInt64(4 * blockSize + 10)) }
    #expect(try src.size() == UInt64(4 * blockSize + 110))
    #expect(try read(src, 4 * blockSize, 110) == [UInt8](repeating: 0, count: 10) + new)
  }

  @Test func aReadOnlyObjectRefusesWrites() throws {
    let src = source(ScriptedObject(patternBytes(blockSize)))
    let error = #expect(throws: VDiskError.self) {
      try [UInt8(1)].withUnsafeBytes { try src.write($0, at: 0) }
    }
    #expect(error?.kind == .readOnly)
  }
}
