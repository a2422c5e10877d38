import Foundation
import RemoteStore
import TestSupport
import Testing
import VDiskCore

@Suite struct PersistentBlocksTests {
  let blockSize = 64 << 10

  func source(_ object: ScriptedObject, directory: String) -> CachedRemoteSource {
    var options = RemoteOptions()
    options.cacheDirectory = directory
    return CachedRemoteSource(
      object, cache: BlockCache(budget: 1 << 20, blockSize: blockSize), options: options)
  }

  func readAll(_ source: CachedRemoteSource, _ count: Int) throws -> [UInt8] {
    var out = [UInt8](repeating: 0, count: count)
    _ = try out.withUnsafeMutableBytes { try source.read(into: $0, at: 0) }
    return out
  }

  @Test func aRemountReadsKeptBlocksFromTheCacheDirectory() throws {
    let scratch = try Scratch("cache-dir")
    defer { scratch.remove() }
    let bytes = patternBytes(40 * blockSize + 99)
    do {
      let object = ScriptedObject(bytes, location: "s3://b/k")
      #expect(try readAll(source(object, directory: scratch.path), bytes.count) == bytes)
      #expect(object.fetches == 41)
    }
    let again = ScriptedObject(bytes, location: "s3://b/k")
    #expect(try readAll(source(again, directory: scratch.path), bytes.count) == bytes)
    #expect(again.fetches == 0)
    // Another object, or another version of it, has a cache of its own.
    let other = ScriptedObject(patternBytes(bytes.count, seed: 9), location: "s3://b/other")
    #expect(
      try readAll(source(other, directory: scratch.path), bytes.count) == patternBytes(bytes.count, seed: 9))
    #expect(other.fetches == 41)
    let folders = try FileManager.default.contentsOfDirectory(atPath: scratch.path)
    #expect(folders.count == 2)
  }

  @Test func anUnusableCacheDirectoryIsLoggedAndTheReadsGoOn() throws {
    let object = ScriptedObject(patternBytes(3 * blockSize))
    let src = source(object, directory: "/proc/no-such-dir")
    #expect(try readAll(src, 3 * blockSize) == patternBytes(3 * blockSize))
    #expect(object.fetches == 3)
  }

  @Test func aSizePastAnyDiskKeepsNothingInTheCacheDirectory() throws {
    let scratch = try Scratch("cache-dir-huge")
    defer { scratch.remove() }
    let object = ScriptedObject(patternBytes(blockSize), claimedSize: 1 << 62)
    let logs = CapturedLogs()
    #expect(
      PersistentBlocks.open(for: object, in: scratch.path, blockSize: blockSize, logger: logs.logger()) == nil
    )
    #expect(logs.contains("claims"), "\(logs.all)")
    #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).isEmpty)
  }
}
