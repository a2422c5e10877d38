import Dispatch
import Foundation
import ImageFormats
import QCOW2
import Synchronization
import TestSupport
import Testing
import VDiskCore

/// Refusals, corruption detection, crash consistency, concurrency, and backing files left alone.
@Suite struct WriteSafetyTests {
  @Test func corruptBitRefusesReadWrite() throws {
    let scratch = try Scratch("qwrite-corrupt")
    defer { scratch.remove() }
    let image = scratch.file("c.qcow2")
    try Qemu.create(image, size: "1M")
    try patch(image, at: 72, 2, width: 8)
    expectVDiskError(.readOnly, ["marked corrupt", "qemu-img check -r all"]) { _ = try openWritable(image) }
    _ = try openChain(image)  // read-only still works
  }

  @Test func dirtyImageIsRefusedAndLazyRefcountsAreWrittenExactly() throws {
    let scratch = try Scratch("qwrite-dirty")
    defer { scratch.remove() }
    let dirty = scratch.file("d.qcow2")
    try Qemu.create(dirty, size: "1M", options: ["lazy_refcounts=on"])
    try patch(dirty, at: 72, 1, width: 8)
    expectVDiskError(.readOnly, ["qemu-img check -r all"]) { _ = try openWritable(dirty) }

    // Lazy refcounts without the dirty bit: consistent; we keep refcounts exact anyway.
    let lazy = scratch.file("l.qcow2")
    try Qemu.create(lazy, size: "1M", options: ["lazy_refcounts=on"])
    var mirror = [UInt8](repeating: 0, count: 1 << 20)
    do {
      let disk = MirroredDisk(chain: try openWritable(lazy), mirror: mirror)
      try disk.write(at: 1000, count: 200_000)
      try disk.chain.flush()
      mirror = disk.mirror
    }
    #expect(try field(lazy, at: 72, width: 8) & 1 == 0)
    try WriteStructureTests.expectConsistent(lazy, mirror: mirror, scratch: scratch)
  }

  @Test func l2EntryPointingIntoMetadataMarksCorrupt() throws {
    let scratch = try Scratch("qwrite-overlap")
    defer { scratch.remove() }
    let image = scratch.file("o.qcow2")
    try Qemu.create(image, size: "1M")
    try Qemu.io(image, ["write -P 0x22 0 128k"])
    let refTable = try field(image, at: 48, width: 8)
    let (_, l2) = try firstL2Table(image)
    // Guest cluster 1 now claims the refcount table as its data (COPIED set).
    try patch(image, at: l2 + 8, refTable | 1 << 63, width: 8)
    let tableBefore = try field(image, at: refTable, width: 8)
    do {
      let chain = try openWritable(image)
      let data = [UInt8](repeating: 0x77, count: 512)
      expectVDiskError(.corrupt, ["refcount table", "marked corrupt"]) {
        _ = try data.withUnsafeBytes { try chain.write($0, at: 65536) }
      }
      // Every later write is refused.
      expectVDiskError(.corrupt, ["marked corrupt"]) {
        _ = try data.withUnsafeBytes { try chain.write($0, at: 0) }
      }
    }
    #expect(try field(image, at: 72, width: 8) & 2 != 0, "corrupt bit not set")
    #expect(try field(image, at: refTable, width: 8) == tableBefore, "refcount table was overwritten")
  }

  @Test func zeroRefcountOnReferencedClusterMarksCorrupt() throws {
    let scratch = try Scratch("qwrite-refzero")
    defer { scratch.remove() }
    let image = scratch.file("z.qcow2")
    try Qemu.create(image, size: "1M")
    try Qemu.io(image, ["write -P 0x22 0 64k"])
    let (_, l2) = try firstL2Table(image)
    let entry = try field(image, at: l2, width: 8)
    let host = entry & 0x00FF_FFFF_FFFF_FE00
    let block = try field(image, at: try field(image, at: 48, width: 8), width: 8)
    try patch(image, at: block + 2 * (host >> 16), 0, width: 2)  // 16-bit refcounts
    // Without COPIED the writer must copy the cluster and looks its refcount up (with COPIED it
    // trusts the flag and writes in place without a lookup, as QEMU does).
    try patch(image, at: l2, entry & ~(1 << 63), width: 8)
    do {
      let chain = try openWritable(image)
      expectVDiskError(.corrupt, ["refcount 0"]) {
        _ = try [UInt8](repeating: 1, count: 10).withUnsafeBytes { try chain.write($0, at: 5) }
      }
    }
    #expect(try field(image, at: 72, width: 8) & 2 != 0)
  }

  @Test func droppingTheChainWithoutFlushLeavesNoCorruption() throws {
    let scratch = try Scratch("qwrite-crash")
    defer { scratch.remove() }
    let base = scratch.file("base.qcow2")
    let image = scratch.file("top.qcow2")
    try Qemu.create(base, size: "8M")
    try Qemu.scatterPatterns(base, size: 8 << 20, count: 20, seed: 3)
    try Qemu.create(
      image, size: "8M", options: ["cluster_size=4k"], backing: "base.qcow2", backingFormat: "qcow2")
    try Qemu.img("snapshot", "-c", "s1", image)
    var rng = SplitMix64(seed: 42)
    var crashCopies: [String] = []
    do {
      let initial = try Qemu.rawContent(of: image, scratch: scratch)
      let disk = MirroredDisk(chain: try openWritable(image), mirror: initial)
      for step in 0..<300 {
        let offset = rng.next() % ((8 << 20) - 70_000)
        let length = Int(1 + rng.next() % 70_000)
        if rng.next() % 4 == 0 {
          try disk.discard(at: offset, count: length, mode: .punchHole)
        } else {
          try disk.write(at: offset, count: length)
        }
        if step % 37 == 0 { try disk.chain.flush() }
        if step % 50 == 25 {
          // The file as a crash would leave it (every write so far reached the disk).
          let copy = scratch.file("crash-\(step).qcow2")
          try FileManager.default.copyItem(atPath: image, toPath: copy)
          crashCopies.append(copy)
        }
      }
      // No flush: the chain is dropped as a crash would.
    }
    crashCopies.append(image)
    for copy in crashCopies {
      let report = try Qemu.check(copy, format: "qcow2")
      #expect(report.status == 0 || report.status == 3, "\(copy): \(report)")
      #expect(report.errors == 0, "\(copy): \(report)")
    }
  }

  @Test func backingFilesAreNeverOpenedWritable() throws {
    let scratch = try Scratch("qwrite-backing")
    defer { scratch.remove() }
    let base = scratch.file("base.qcow2")
    let image = scratch.file("top.qcow2")
    try Qemu.create(base, size: "2M")
    try Qemu.io(base, ["write -P 0x31 0 2M"])
    try Qemu.create(image, size: "2M", backing: "base.qcow2", backingFormat: "qcow2")
    let before = try fileChecksum(base)
    do {
      let chain = try openWritable(image)
      #expect(chain.layers.count == 2)
      #expect(chain.layers[0].file.isWritable)
      #expect(!chain.layers[1].file.isWritable)
      expectVDiskError(.readOnly, ["read-only"]) {
        _ = try (chain.layers[1] as? any WritableLayer)?.prepareWrite(at: 0, length: 1)
      }
      let disk = MirroredDisk(chain: chain, mirror: try Qemu.rawContent(of: image, scratch: scratch))
      try disk.write(at: 100, count: 1 << 20)
      try disk.discard(at: 1 << 20, count: 1 << 20, mode: .punchHole)
      try chain.flush()
      #expect(try disk.verifyAll() == nil)
    }
    #expect(try fileChecksum(base) == before)
    #expect(try Qemu.check(image, format: "qcow2").isClean)
  }

  @Test(arguments: [false, true])
  func concurrentWritersToOverlappingAndDisjointRanges(extendedL2: Bool) throws {
    let scratch = try Scratch("qwrite-threads")
    defer { scratch.remove() }
    let base = scratch.file("base.raw")
    let image = scratch.file("top.qcow2")
    let size = 8 << 20
    let shared = 4 << 20
    let threads = 4
    try Qemu.create(base, format: "raw", size: "\(size)")
    try Qemu.io(base, format: "raw", ["write -P 0x99 0 \(size)"])
    try Qemu.create(
      image, size: "\(size)",
      options: extendedL2 ? ["extended_l2=on", "cluster_size=16k"] : ["cluster_size=16k"],
      backing: "base.raw", backingFormat: "raw")
    // All threads walk the shared region cluster by cluster in step, each writing one of its own
    // sectors (sector % threads == thread) of the same fresh cluster: allocating writes with
    // copy-on-write fill from the backing file meet all the time, on different bytes. Each also
    // writes its own 1 MiB region after the shared one; a sixth thread flushes meanwhile.
    let written = Mutex<[(thread: Int, sector: Int)]>([])
    let arrived = Atomic<Int>(0)
    let failures = Mutex<[String]>([])
    var expected = [UInt8](repeating: 0x99, count: size)
    do {
      let chain = try openWritable(image)
      onThreads(threads + 1) { t in
        do {
          if t == threads {
            for _ in 0..<30 {
              try chain.flush()
              usleep(1000)
            }
            return
          }
          var rng = SplitMix64(seed: UInt64(t) + 1)
          let sector = [UInt8](repeating: UInt8(t + 1), count: 512)
          let own = [UInt8](repeating: UInt8(0x10 + t), count: 1 << 20)
          var mine: [(thread: Int, sector: Int)] = []
          for cluster in 0..<(shared / 16384) {
            // A barrier: every writer starts on this cluster together.
            arrived.add(1, ordering: .sequentiallyConsistent)
            let deadline = ContinuousClock.now + .seconds(20)
            while arrived.load(ordering: .sequentiallyConsistent) < (cluster + 1) * threads {
              guard ContinuousClock.now < deadline else { throw CancellationError() }
              sched_yield()
            }
            let index = cluster * 32 + Int(rng.next() % 8) * threads + t
            _ = try sector.withUnsafeBytes { try chain.write($0, at: UInt64(index * 512)) }
            mine.append((t, index))
            if cluster % 16 == 0 {
              let piece = Int(rng.next() % 100_000) + 1
              let at = Int(rng.next() % UInt64((1 << 20) - piece))
              _ = try own.withUnsafeBytes {
                try chain.write(
                  UnsafeRawBufferPointer(rebasing: $0[0..<piece]), at: UInt64(shared + t << 20 + at))
              }
            }
          }
          _ = try own.withUnsafeBytes { try chain.write($0, at: UInt64(shared + t << 20)) }
          written.withLock { $0 += mine }
        } catch {
          failures.withLock { $0.append("thread \(t): \(error)") }
        }
      }
      try chain.flush()
      for (t, index) in written.withLock({ $0 }) {
        for i in 0..<512 { expected[index * 512 + i] = UInt8(t + 1) }
      }
      for t in 0..<threads {
        for i in 0..<(1 << 20) { expected[shared + t << 20 + i] = UInt8(0x10 + t) }
      }
      let actual = try chain.read(at: 0, count: size)
      let difference = firstDifference(actual, expected)
      #expect(difference == nil, "first difference at \(difference.map { hex($0) } ?? "")")
    }
    #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0 })")
    try WriteStructureTests.expectConsistent(image, mirror: expected, scratch: scratch)
  }
}

/// Runs `body(0..<count)` on `count` threads of their own (all at once, unlike
/// `concurrentPerform`, which may run fewer) and waits for all of them.
func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
  let done = DispatchSemaphore(value: 0)
  for t in 0..<count {
    let thread = Thread {
      body(t)
      done.signal()
    }
    thread.start()
  }
  for _ in 0..<count { done.wait() }
}
