// One fixed, deterministic hot-path workload, meant to run under
// `valgrind --tool=callgrind` so its instruction count is a noise-free regression number.
// Usage: HotPathCallgrind PLAIN.qcow2 COMPRESSED.qcow2 (images made by qemu-img; see
// Workloads.makeImages; `HotPathCallgrind --make DIR` makes them and prints their paths).
import HotPathWorkloads
import VDiskCore

let args = CommandLine.arguments
if args.count == 3, args[1] == "--make" {
  let images = try Workloads.makeImages(in: args[2])
  print(images.plain)
  print(images.compressed)
} else if args.count == 3 {
  let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
  defer { buffer.deallocate() }
  let plain = try Workloads.open(args[1])
  // Warm the metadata cache, then the measured part is all cache hits.
  _ = try Workloads.extentLookups(plain, count: 2_000)
  var sum = try Workloads.extentLookups(plain, count: 20_000)
  sum &+= try Workloads.reads(plain, count: 5_000, buffer: buffer)
  let compressed = try Workloads.open(args[2])
  sum &+= try Workloads.compressedDecodes(compressed, count: 200, start: 0, buffer: buffer)
  let cache = TableCache<UInt64, Int>(budget: 8 << 20)
  sum &+= UInt64(Workloads.tableCache(cache, count: 50_000))
  print("checksum \(sum)")
} else {
  print("usage: HotPathCallgrind PLAIN.qcow2 COMPRESSED.qcow2 | --make DIR")
}
