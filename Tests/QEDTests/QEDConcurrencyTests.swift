import Foundation
import QED
import Synchronization
import TestSupport
import Testing
import VDiskCore

/// Writers on several threads at once (allocating under shared and new L2 tables, in place),
/// with readers and flushes between them: every thread reads back its own bytes, and the image
/// is `qemu-img check` clean and holds what was written.
@Suite struct QEDConcurrencyTests {
  @Test func writersReadersAndFlushesTogether() throws {
    let scratch = try Scratch("qed-concurrent")
    defer { scratch.remove() }
    let image = scratch.file("c.qed")
    let base = scratch.file("base.raw")
    let size = 12 << 20
    try Qemu.create(base, format: "raw", size: "\(size)")
    try Qemu.io(base, format: "raw", ["write -P 0x0b 0 \(size)"])
    // 4 KiB clusters, two-cluster tables: three L2 tables, most of them made by the writers.
    try Qemu.create(
      image, format: "qed", size: "\(size)", options: ["cluster_size=4096", "table_size=2"],
      backing: "base.raw",
      backingFormat: "raw")
    try Qemu.io(image, format: "qed", ["write -P 0x0c 100k 200k"])
    let chain = try openWritable(image, cacheSize: 16 << 10, format: QEDDriver.self)
    var expected = try Qemu.rawContent(of: image, scratch: scratch)
    let threads = 8
    // Thread t owns the interleaved 96 KiB stripes t, t + 8, …, which start 1000 bytes into a
    // cluster: neighbours share the cluster at each stripe edge.
    let stripe = 96 << 10
    let shift = 1000
    let failures = TestFailures()
    let written = Mutex<[(Int, [UInt8])]>([])
    DispatchQueue.concurrentPerform(iterations: threads) { t in
      var rng = SplitMix64(seed: UInt64(t) + 40)
      for round in 0..<30 {
        let stripeIndex = t + threads * Int(rng.next() % UInt64((size - shift) / stripe / threads))
        let start = shift + stripeIndex * stripe + Int(rng.next() % UInt64(stripe / 2))
        let count = 1 + Int(rng.next() % UInt64(stripe / 2 - 1))
        let bytes = pattern(count, serial: UInt64(t * 1000 + round))
        do {
          _ = try bytes.withUnsafeBytes { try chain.write($0, at: UInt64(start)) }
          if try chain.read(at: UInt64(start), count: count) != bytes {
            failures.record("thread \(t) round \(round): read back differs at \(start)")
          }
          written.withLock { $0.append((start, bytes)) }
          if round % 7 == t % 7 { try chain.flush() }
        } catch {
          failures.record("thread \(t) round \(round): \(error)")
        }
      }
    }
    #expect(failures.all.isEmpty, "\(failures.all)")
    try chain.flush()
    // Writes of one thread never overlap another's stripes, and a thread's own later writes come
    // later in `written`.
    for (start, bytes) in written.withLock({ $0 }) {
      expected.replaceSubrange(start..<start + bytes.count, with: bytes)
    }
    #expect(try readAll(chain) == expected)
    #expect(try Qemu.check(image, format: "qed").isClean)
    #expect(try Qemu.rawContent(of: image, format: "qed", scratch: scratch) == expected)
  }
}

/// Failures recorded from several threads.
final class TestFailures: Sendable {
  private let list = Mutex<[String]>([])
  func record(_ failure: String) { list.withLock { $0.append(failure) } }
  var all: [String] { list.withLock { $0 } }
}
