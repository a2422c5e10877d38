import TestSupport
import Testing
import VDiskCore

@Suite struct LayerChainTests {
  /// top (8 KiB): [0,1k) data@2k, [1k,2k) zero, [2k,4k) unallocated, [4k,5k) compressed, [5k,8k) unallocated
  /// base (3 KiB, smaller than top): [0,3k) data@0
  /// Expected: top data, zeros, base bytes 2k..3k, zeros for 3k..4k (past the base's end),
  /// compressed pattern, zeros.
  func makeChain(_ scratch: Scratch) throws -> (LayerChain, [UInt8], ScriptedLayer) {
    let (topFile, topBytes) = try patternFile(scratch, "top", size: 16384, seed: 1)
    let (baseFile, baseBytes) = try patternFile(scratch, "base", size: 3072, seed: 99)
    let base = ScriptedLayer(
      file: baseFile, virtualSize: 3072, backing: nil,
      segments: [.init(start: 0, end: 3072, mapping: .data(hostOffset: 0))])
    let descriptor = CompressedDescriptor(
      hostOffset: 0, compressedLength: 10, guestOffset: 4096, decompressedLength: 1024)
    let top = ScriptedLayer(
      file: topFile, virtualSize: 8192, backing: base,
      segments: [
        .init(start: 0, end: 1024, mapping: .data(hostOffset: 2048)),
        .init(start: 1024, end: 2048, mapping: .zero),
        .init(start: 4096, end: 5120, mapping: .compressed(descriptor)),
      ])
    var expected = [UInt8](repeating: 0, count: 8192)
    expected[0..<1024] = topBytes[2048..<3072]
    expected[2048..<3072] = baseBytes[2048..<3072]
    for i in 4096..<5120 { expected[i] = UInt8(i & 0xff) ^ 0xa5 }
    return (LayerChain(top: top), expected, top)
  }

  @Test func readsEveryMappingKindThroughTheChain() throws {
    let scratch = try Scratch("core")
    defer { scratch.remove() }
    let (chain, expected, _) = try makeChain(scratch)
    #expect(firstDifference(try chain.read(at: 0, count: 8192), expected) == nil)
  }

  @Test func everySubrangeMatches() throws {
    let scratch = try Scratch("core")
    defer { scratch.remove() }
    let (chain, expected, _) = try makeChain(scratch)
    var rng = SplitMix64(seed: 7)
    for _ in 0..<2000 {
      let offset = Int(rng.next() % 8192)
      let length = Int(rng.next() % 3000) + 1
      let got = try chain.read(at: UInt64(offset), count: length)
      let want = Array(expected[offset..<min(8192, offset + length)])
      #expect(firstDifference(got, want) == nil, "offset \(offset) length \(length)")
      if got != want { break }
    }
  }

  @Test func readStopsAtTheEndOfTheDisk() throws {
    let scratch = try Scratch("core")
    defer { scratch.remove() }
    let (chain, expected, _) = try makeChain(scratch)
    #expect(try chain.read(at: 8000, count: 1000) == Array(expected[8000...]))
    #expect(try chain.read(at: 8192, count: 10) == [])
    #expect(try chain.read(at: UInt64.max - 5, count: 10) == [])
  }

  @Test func oneExtentCallPerRun() throws {
    let scratch = try Scratch("core")
    defer { scratch.remove() }
    let (chain, _, top) = try makeChain(scratch)
    _ = try chain.read(at: 0, count: 8192)
    // data, zero, unallocated, compressed, unallocated
    #expect(top.extentCalls.load(ordering: .relaxed) == 5)
  }

  @Test func dataPastTheEndOfTheHostFileReadsAsZeros() throws {
    let scratch = try Scratch("core")
    defer { scratch.remove() }
    let (file, bytes) = try patternFile(scratch, "short", size: 1000, seed: 3)
    let layer = ScriptedLayer(
      file: file, virtualSize: 4096, backing: nil,
      segments: [.init(start: 0, end: 4096, mapping: .data(hostOffset: 0))])
    let got = try LayerChain(top: layer).read(at: 0, count: 4096)
    #expect(Array(got[0..<1000]) == bytes)
    #expect(got[1000...].allSatisfy { $0 == 0 })
  }

  @Test func aDriverThatBreaksTheContractIsAnErrorNotAHang() throws {
    let scratch = try Scratch("core")
    defer { scratch.remove() }
    let (chain, _, top) = try makeChain(scratch)
    top.brokenAnswer = Extent(offset: 0, length: 0, mapping: .zero, file: top.file)
    #expect(throws: VDiskError.self) { _ = try chain.read(at: 0, count: 100) }
    top.brokenAnswer = Extent(offset: 0, length: 1 << 40, mapping: .zero, file: top.file)
    #expect(throws: VDiskError.self) { _ = try chain.read(at: 0, count: 100) }
    top.brokenAnswer = Extent(offset: 5, length: 10, mapping: .zero, file: top.file)
    #expect(throws: VDiskError.self) { _ = try chain.read(at: 0, count: 100) }
    #expect(throws: VDiskError.self) { _ = try chain.seekData(from: 0) }
  }

  @Test func seekAndAllocationFollowTheChain() throws {
    let scratch = try Scratch("core")
    defer { scratch.remove() }
    let (chain, _, _) = try makeChain(scratch)
    // Data: [0,1k) top, [2k,3k) base, [4k,5k) compressed. Holes elsewhere.
    #expect(try chain.seekData(from: 0) == 0)
    #expect(try chain.seekHole(from: 0) == 1024)
    #expect(try chain.seekData(from: 1024) == 2048)
    #expect(try chain.seekHole(from: 2048) == 3072)
    #expect(try chain.seekData(from: 3072) == 4096)
    #expect(try chain.seekHole(from: 4500) == 5120)
    #expect(try chain.seekData(from: 5120) == nil)
    #expect(try chain.seekHole(from: 8191) == 8191)
    #expect(try chain.seekHole(from: 8192) == nil)
    #expect(try chain.allocatedBytes() == 3072)
    var kinds: [(UInt64, UInt64, ChainExtent.Kind, Int)] = []
    try chain.forEachStatus { kinds.append(($0.offset, $0.length, $0.kind, $0.depth)) }
    #expect(kinds.map(\.0) == [0, 1024, 2048, 3072, 4096, 5120])
    #expect(kinds.map(\.2) == [.data, .zero, .data, .unallocated, .data, .unallocated])
    #expect(kinds.map(\.3) == [0, 0, 1, 1, 0, 1])
  }
}

@Suite struct LayerChainArgumentTests {
  @Test func statusOutsideTheDiskIsAnErrorNotATrap() throws {
    let scratch = try Scratch("core")
    defer { scratch.remove() }
    let (file, _) = try patternFile(scratch, "f", size: 4096, seed: 1)
    let chain = LayerChain(top: ScriptedLayer(file: file, virtualSize: 4096, backing: nil, segments: []))
    #expect(throws: VDiskError.self) { _ = try chain.status(at: 4096, maxLength: 1) }
    #expect(throws: VDiskError.self) { _ = try chain.status(at: 0, maxLength: 0) }
    #expect(try chain.status(at: 0, maxLength: 1 << 40).length == 4096)
  }
}
