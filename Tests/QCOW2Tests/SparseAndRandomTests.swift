import Foundation
import ImageFormats
import QCOW2
import TestSupport
import Testing
import VDiskCore

/// Huge sparse images and random reads.
@Suite struct SparseAndRandomTests {
  @Test func oneTebibyteSparseImageWithWritesNearItsEnd() throws {
    let scratch = try Scratch("sparse")
    defer { scratch.remove() }
    let image = scratch.file("big.qcow2")
    let size: UInt64 = 1 << 40
    try Qemu.create(image, size: "1T")
    let regions: [(UInt64, UInt64, UInt8)] = [
      (size - (1 << 20), 1 << 20, 0x71), (size - (300 << 20), 70_000, 0x72), (1 << 39, 4096, 0x73),
      (0, 512, 0x74),
    ]
    try Qemu.io(image, regions.map { "write -P \($0.2) \($0.0) \($0.1)" })

    let clock = ContinuousClock()
    let start = clock.now
    let chain = try openChain(image)
    #expect(chain.virtualSize == size)
    for (offset, length, pattern) in regions {
      let from = offset >= 65536 ? offset - 65536 : 0
      let to = min(size, offset + length + 65536)
      let bytes = try chain.read(at: from, count: Int(to - from))
      for (i, byte) in bytes.enumerated() {
        let position = from + UInt64(i)
        let expected: UInt8 = position >= offset && position < offset + length ? pattern : 0
        if byte != expected {
          Issue.record("byte at \(hex(position)) is \(byte), expected \(expected)")
          break
        }
      }
    }
    // A SEEK-style walk of the whole map answers in few calls and finds exactly the data.
    var data: [(UInt64, UInt64)] = []
    var calls = 0
    try chain.forEachStatus { s in
      calls += 1
      if s.isData { data.append((s.offset, s.length)) }
    }
    #expect(calls < 50)
    let qemuData = try Qemu.map(image).filter(\.data).map { ($0.start, $0.length) }
    #expect(data.map(\.0) == qemuData.map(\.0))
    #expect(data.map(\.1) == qemuData.map(\.1))
    #expect(try chain.seekData(from: 4096) == 4096)
    #expect(try chain.seekData(from: 65536) == 1 << 39)
    #expect(try chain.seekHole(from: 1 << 39) == (1 << 39) + 65536)
    #expect(clock.now - start < timeBudget(.seconds(5)))
  }

  @Test(arguments: [(4096, "1.1"), (65536, "0.10"), (65536, "1.1")])
  func thousandsOfRandomReads(clusterSize: Int, compat: String) throws {
    let scratch = try Scratch("random")
    defer { scratch.remove() }
    let base = scratch.file("base.qcow2")
    let image = scratch.file("top.qcow2")
    let size: UInt64 = 4 << 20
    try Qemu.create(base, size: "\(size)", options: ["cluster_size=\(clusterSize)", "compat=\(compat)"])
    try Qemu.scatterPatterns(base, size: size, count: 40, seed: 11)
    try Qemu.create(
      image, size: "\(size)", options: ["cluster_size=\(clusterSize)", "compat=\(compat)"],
      backing: "base.qcow2",
      backingFormat: "qcow2")
    try Qemu.scatterPatterns(image, size: size, count: 40, seed: 12)
    if compat == "1.1" { try Qemu.io(image, ["write -z 100k 300k", "write -c -P 0x77 2M 64k"]) }
    let expected = try Qemu.rawContent(of: image, scratch: scratch)
    let chain = try openChain(image)
    var rng = SplitMix64(seed: UInt64(clusterSize))
    for _ in 0..<3000 {
      let offset = rng.next() % size
      let length = Int(1 + rng.next() % (rng.next() % 4 == 0 ? 300_000 : 5000))
      let bytes = try chain.read(at: offset, count: length)
      let end = min(Int(size), Int(offset) + length)
      let want = Array(expected[Int(offset)..<end])
      if let d = firstDifference(bytes, want) {
        Issue.record("read of \(length) at \(hex(offset)) differs at \(hex(Int(offset) + d))")
        return
      }
    }
  }
}
