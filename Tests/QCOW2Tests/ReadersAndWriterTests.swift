import Dispatch
import Foundation
import ImageFormats
import Synchronization
import TestSupport
import Testing
import VDiskCore

@testable import QCOW2

/// Readers of a read-write qcow2 layer never take the writer's lock, and dirty metadata stays
/// within the cache budget.
@Suite struct ReadersAndWriterTests {
  @Test func readsNeverWaitForTheWritersLock() throws {
    let scratch = try Scratch("qwrite-readers")
    defer { scratch.remove() }
    let image = scratch.file("r.qcow2")
    try Qemu.create(image, size: "64M", options: ["cluster_size=4k"])
    try Qemu.scatterPatterns(image, size: 64 << 20, count: 40, seed: 9)
    let expected = try Qemu.rawContent(of: image, scratch: scratch)
    let chain = try openWritable(image)
    let layer = try #require(chain.top as? QCOW2Layer)
    let writer = try #require(layer.writer)
    // Another thread holds the writer's lock until the reads below are done (or 30 s passed:
    // then they waited for it, which is the failure).
    let held = DispatchSemaphore(value: 0)
    let readsDone = DispatchSemaphore(value: 0)
    let waitedOut = Mutex<Bool?>(nil)
    let holder = Thread {
      writer.state.withLock { _ in
        held.signal()
        let outcome = readsDone.wait(timeout: .now() + 30)
        waitedOut.withLock { $0 = outcome == .timedOut }
      }
    }
    holder.start()
    held.wait()
    // Every L2 table is a cache miss here: loads from the file too run without the lock.
    let actual = try chain.read(at: 0, count: 64 << 20)
    _ = try chain.status(at: 0, maxLength: 64 << 20)
    readsDone.signal()
    while waitedOut.withLock({ $0 }) == nil { usleep(1000) }
    #expect(waitedOut.withLock { $0 } == false, "a read waited for the writer's lock")
    #expect(firstDifference(actual, expected) == nil)
  }

  @Test func dirtyMetadataStaysWithinTheCacheBudget() throws {
    let scratch = try Scratch("qwrite-budget")
    defer { scratch.remove() }
    let image = scratch.file("big.qcow2")
    // 4 KiB clusters: an L2 table covers 2 MiB, so scattered writes dirty a table each.
    try Qemu.create(image, size: "4G", options: ["cluster_size=4k"])
    let budget = 256 << 10
    let chain = try openChain(image, OpenOptions(cacheSize: budget, writable: true))
    var rng = SplitMix64(seed: 5)
    var written: [(UInt64, UInt8)] = []
    var peakDirty = 0
    for i in 0..<600 {
      let offset = (rng.next() % ((4 << 30) / 4096)) * 4096
      let byte = UInt8(truncatingIfNeeded: i | 1)
      _ = try [UInt8](repeating: byte, count: 4096).withUnsafeBytes { try chain.write($0, at: offset) }
      written.append((offset, byte))
      let layer = try #require(chain.top as? QCOW2Layer)
      peakDirty = max(peakDirty, layer.metadataCache.dirtyCost)
      #expect(layer.metadataCache.totalCost <= budget + 3 * 4096)
    }
    // Dirty tables are written back at three quarters of the budget (plus the tables of one write).
    #expect(peakDirty <= budget / 4 * 3 + 3 * 4096, "peak dirty metadata \(peakDirty) bytes")
    #expect(peakDirty > budget / 2, "the test should fill the budget with dirty tables")
    for (offset, byte) in written.suffix(50) {
      let back = try chain.read(at: offset, count: 4096)
      let later = written.last { $0.0 == offset }?.1 ?? byte
      #expect(back.allSatisfy { $0 == later })
    }
    try chain.flush()
    let report = try Qemu.check(image, format: "qcow2")
    #expect(report.isClean, "\(report)")
  }
}
