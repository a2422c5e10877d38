import Dispatch
import Foundation
import ImageFormats
import Logging
import QCOW2
import Synchronization
import TestSupport
import Testing
import VDiskCore

@Suite struct LoggingAndConcurrencyTests {
  @Test func corruptBitIsLoggedAsAWarning() throws {
    let scratch = try Scratch("corrupt-log")
    defer { scratch.remove() }
    let image = scratch.file("c.qcow2")
    try Qemu.create(image, size: "1M")
    let store = CapturedLogs()
    let captured = Logger(label: "test") { _ in CapturingLogHandler(store: store) }
    _ = try ImageOpener.open(image, options: OpenOptions(), logger: captured)
    #expect(store.all.isEmpty)
    try patch(image, at: 72, 0b10, width: 8)
    _ = try ImageOpener.open(image, options: OpenOptions(), logger: captured)
    #expect(store.all.count == 1)
    #expect(store.all.first?.hasPrefix("warning image is marked corrupt") == true)
    #expect(store.all.first?.contains(image) == true)
  }

  @Test func concurrentReadsAgreeWithQemu() throws {
    let scratch = try Scratch("concurrent")
    defer { scratch.remove() }
    let base = scratch.file("base.qcow2")
    let image = scratch.file("top.qcow2")
    let size: UInt64 = 4 << 20
    try Qemu.create(base, size: "4M", options: ["cluster_size=4096"])
    try Qemu.scatterPatterns(base, size: size, count: 30, seed: 31)
    try Qemu.create(image, size: "4M", backing: "base.qcow2", backingFormat: "qcow2")
    // Compressed writes need unallocated clusters: before the scattered ones.
    try Qemu.io(image, ["write -c -P 0x51 1M 64k", "write -c -P 0x52 3M 64k"])
    try Qemu.scatterPatterns(image, size: size, count: 30, seed: 32)
    let expected = try Qemu.rawContent(of: image, scratch: scratch)
    // A tiny cache so that threads evict each other's tables.
    let chain = try openChain(image, OpenOptions(cacheSize: 8192))
    let failures = CapturedLogs()
    DispatchQueue.concurrentPerform(iterations: 8) { worker in
      var rng = SplitMix64(seed: UInt64(worker))
      for _ in 0..<300 {
        let offset = rng.next() % size
        let length = Int(1 + rng.next() % 200_000)
        do {
          let bytes = try chain.read(at: offset, count: length)
          let want = Array(expected[Int(offset)..<min(Int(size), Int(offset) + length)])
          if firstDifference(bytes, want) != nil {
            failures.append("read \(length) at \(hex(offset)) differs")
          }
        } catch {
          failures.append("\(error)")
        }
      }
    }
    #expect(failures.all.isEmpty, "\(failures.all.prefix(3))")
  }
}
