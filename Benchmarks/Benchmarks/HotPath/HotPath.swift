// Micro benchmarks of the hot path: extent lookup with a warm cache, 4 KiB reads through the
// chain, TableCache get/put, one 64 KiB compressed-cluster decode. Run with
// `swift package --allow-writing-to-package-directory benchmark` in Benchmarks/ (bench.sh does).
import Benchmark
import Foundation
import HotPathWorkloads
import VDiskCore

let imageDir = ProcessInfo.processInfo.environment["HOTPATH_IMAGES"] ?? "/tmp/vdiskfs-hotpath-images"

let benchmarks: @Sendable () -> Void = {
  Benchmark.defaultConfiguration = .init(
    metrics: [.wallClock, .instructions, .mallocCountTotal, .throughput],
    maxDuration: .seconds(2), maxIterations: 1_000_000)

  guard let images = try? Workloads.makeImages(in: imageDir) else {
    fatalError("could not make the benchmark images in \(imageDir) (needs qemu-img)")
  }
  let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)

  Benchmark("LayerChain.status, warm cache", configuration: .init(scalingFactor: .kilo)) {
    benchmark in
    let chain = try Workloads.open(images.plain)
    _ = try Workloads.extentLookups(chain, count: 4_000)
    benchmark.startMeasurement()
    for i in benchmark.scaledIterations {
      blackHole(try Workloads.extentLookups(chain, count: 1, seed: UInt64(i)))
    }
  }

  Benchmark("LayerChain.read 4 KiB, qcow2, warm cache", configuration: .init(scalingFactor: .kilo)) { benchmark in
    let chain = try Workloads.open(images.plain)
    _ = try Workloads.reads(chain, count: 4_000, buffer: buffer)
    benchmark.startMeasurement()
    for i in benchmark.scaledIterations {
      blackHole(try Workloads.reads(chain, count: 1, buffer: buffer, seed: UInt64(i)))
    }
  }

  Benchmark("TableCache get/put (1/3 misses)", configuration: .init(scalingFactor: .kilo)) { benchmark in
    let cache = TableCache<UInt64, Int>(budget: 8 << 20)
    benchmark.startMeasurement()
    for i in benchmark.scaledIterations {
      blackHole(Workloads.tableCache(cache, count: 1, seed: UInt64(i)))
    }
  }

  Benchmark("qcow2 compressed 64 KiB cluster decode") { benchmark in
    let chain = try Workloads.open(images.compressed)
    var start = 0
    benchmark.startMeasurement()
    for _ in benchmark.scaledIterations {
      blackHole(try Workloads.compressedDecodes(chain, count: 1, start: start, buffer: buffer))
      start += 1
    }
  }
}
