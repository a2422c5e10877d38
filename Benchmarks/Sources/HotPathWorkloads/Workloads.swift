import Foundation
import ImageFormats
import Logging
import VDiskCore

/// Fixed, deterministic hot-path workloads over images made by qemu-img. Shared by the ordo-one
/// benchmarks (HotPath) and the callgrind executable (HotPathCallgrind).
public enum Workloads {
  public static let clusterSize = 65536
  public static let logger = Logger(label: "vdiskfs.bench")

  /// Makes (once) `dir`/plain.qcow2 (64 KiB clusters, fully allocated) and `dir`/compressed.qcow2
  /// from a deterministic raw of `sizeMB` MiB (each 64 KiB block: half xorshift noise, half a
  /// repeated pattern, so about 50 % compressible, no zero block).
  public static func makeImages(in dir: String, sizeMB: Int = 64) throws -> (plain: String, compressed: String) {
    let plain = dir + "/plain.qcow2"
    let compressed = dir + "/compressed.qcow2"
    let fm = FileManager.default
    if fm.fileExists(atPath: plain), fm.fileExists(atPath: compressed) { return (plain, compressed) }
    try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let raw = dir + "/source.raw"
    var data = Data(count: sizeMB << 20)
    data.withUnsafeMutableBytes { (p: UnsafeMutableRawBufferPointer) in
      let words = p.bindMemory(to: UInt64.self)
      var x: UInt64 = 0x9E37_79B9_7F4A_7C15
      let perBlock = clusterSize / 8
      for block in 0..<(words.count / perBlock) {
        for i in 0..<perBlock {
          let w: UInt64
          if i < perBlock / 2 {
            x ^= x << 13
            x ^= x >> 7
            x ^= x << 17
            w = x
          } else {
            w = UInt64(block &* 2_654_435_761) | 0x0101_0101_0000_0000
          }
          words[block * perBlock + i] = w
        }
      }
    }
    try data.write(to: URL(fileURLWithPath: raw))
    try run("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=65536", raw, plain])
    try run("qemu-img", ["convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=65536", raw, compressed])
    try? fm.removeItem(atPath: raw)
    return (plain, compressed)
  }

  static func run(_ tool: String, _ arguments: [String]) throws {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = [tool] + arguments
    try p.run()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else {
      throw VDiskError(.io, path: arguments.last ?? tool, "\(tool) failed (\(p.terminationStatus))")
    }
  }

  public static func open(_ path: String, cacheSize: Int? = nil) throws -> LayerChain {
    try ImageOpener.open(path, options: OpenOptions(cacheSize: cacheSize), logger: logger)
  }

  /// Deterministic offsets (an LCG), cluster-aligned plus a sub-cluster 4 KiB slot.
  public struct Offsets {
    var state: UInt64
    let clusters: UInt64
    public init(virtualSize: UInt64, seed: UInt64 = 42) {
      state = seed
      clusters = virtualSize / UInt64(clusterSize)
    }
    public mutating func next() -> UInt64 {
      state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      let s = state >> 33
      return (s % clusters) * UInt64(clusterSize) + ((s >> 20) % 16) * 4096
    }
  }

  /// `count` extent lookups (`LayerChain.status`) at deterministic offsets; with the metadata
  /// cache warm after the first pass. Returns a checksum so nothing is optimized away.
  public static func extentLookups(_ chain: LayerChain, count: Int, seed: UInt64 = 42) throws -> UInt64 {
    var offsets = Offsets(virtualSize: chain.virtualSize, seed: seed)
    var sum: UInt64 = 0
    for _ in 0..<count {
      let e = try chain.status(at: offsets.next(), maxLength: 4096)
      sum &+= (e.hostOffset ?? 0) &+ e.length
    }
    return sum
  }

  /// `count` reads of `size` bytes at deterministic offsets through the chain.
  public static func reads(
    _ chain: LayerChain, count: Int, size: Int = 4096, buffer: UnsafeMutableRawBufferPointer, seed: UInt64 = 7
  ) throws -> UInt64 {
    var offsets = Offsets(virtualSize: chain.virtualSize, seed: seed)
    var sum: UInt64 = 0
    for _ in 0..<count {
      var offset = offsets.next()
      if size >= clusterSize { offset -= offset % UInt64(clusterSize) }
      let n = try chain.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<size]), at: offset)
      sum &+= UInt64(n) &+ UInt64(buffer[0]) &+ UInt64(buffer[size - 1])
    }
    return sum
  }

  /// Whole-cluster reads of a compressed qcow2 walking clusters in order, so every read misses the
  /// decompressed-cluster cache (at most 16 MiB) once the walk covers more than that: each read is
  /// one 64 KiB cluster decode.
  public static func compressedDecodes(
    _ chain: LayerChain, count: Int, start: Int, buffer: UnsafeMutableRawBufferPointer
  ) throws -> UInt64 {
    let clusters = Int(chain.virtualSize) / clusterSize
    var sum: UInt64 = 0
    for i in 0..<count {
      let offset = UInt64(((start + i) % clusters) * clusterSize)
      let n = try chain.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<clusterSize]), at: offset)
      sum &+= UInt64(n) &+ UInt64(buffer[clusterSize / 2])
    }
    return sum
  }

  /// TableCache get/put: a cache of 8 MiB budget with 64 KiB-cost entries (128 fit), keys
  /// drawn from 192 so about a third of the gets miss and are followed by a put (evicting).
  public static func tableCache(_ cache: TableCache<UInt64, Int>, count: Int, seed: UInt64 = 1) -> Int {
    var s = seed
    var sum = 0
    for _ in 0..<count {
      s = s &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      let key = (s >> 33) % 192
      if let v = cache.get(key) {
        sum &+= v
      } else {
        cache.insert(key, Int(key), cost: clusterSize)
      }
    }
    return sum
  }
}
