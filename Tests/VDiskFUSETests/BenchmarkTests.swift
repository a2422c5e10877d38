import Foundation
import TestSupport
import Testing
import VDiskFUSE

/// `dd bs=1M` over a 512 MiB disk.raw with each tuning choice; prints MB/s (first read after
/// mounting, then a second read). Runs only with VDISKFS_BENCH=1 (as root); use `-c release`.
@Suite(
  "Read throughput", .serialized,
  .enabled(if: canMountFUSE && ProcessInfo.processInfo.environment["VDISKFS_BENCH"] != nil))
struct BenchmarkTests {
  struct Config: CustomStringConvertible {
    var threads: Int
    var keepCache: Bool
    var readAhead: Int?
    var description: String {
      "threads \(threads), keep_cache \(keepCache ? "on " : "off"), read-ahead \(readAhead.map { "\($0) KiB" } ?? "default")"
    }
  }

  static let configs: [Config] = [
    Config(threads: 1, keepCache: true, readAhead: 1024),
    Config(threads: 8, keepCache: true, readAhead: nil),
    Config(threads: 8, keepCache: false, readAhead: 1024),
    Config(threads: 8, keepCache: true, readAhead: 1024),
    Config(threads: 2, keepCache: true, readAhead: 1024),
    Config(threads: 16, keepCache: true, readAhead: 1024),
  ]

  /// MB/s of `dd if=path of=/dev/null bs=1M`.
  func dd(_ path: String) throws -> Double {
    let start = ContinuousClock.now
    let r = try run("dd", ["if=\(path)", "of=/dev/null", "bs=1M"])
    let elapsed = ContinuousClock.now - start
    let summary = r.stderr.split(separator: "\n").first { $0.contains("bytes") } ?? ""
    let bytes = Double(summary.split(separator: " ").first.flatMap { Int($0) } ?? 0)
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    return bytes / seconds / 1e6
  }

  @Test func ddThroughput() throws {
    let rounds = Int(ProcessInfo.processInfo.environment["VDISKFS_BENCH_ROUNDS"] ?? "") ?? 3
    var report: [String] = []
    for config in Self.configs {
      var first: [Double] = []
      var second: [Double] = []
      for _ in 0..<rounds {
        var options = MountOptions()
        options.threads = config.threads
        options.keepCache = config.keepCache
        options.readAheadKilobytes = config.readAhead
        let m = try MountedDisk(size: 512 << 20, segments: [], options: options)
        defer { #expect(m.stop()) }
        first.append(try dd(m.disk))
        second.append(try dd(m.disk))
      }
      func median(_ v: [Double]) -> Int { Int(v.sorted()[v.count / 2]) }
      report.append(
        "\(config): first \(median(first)) MB/s, second \(median(second)) MB/s  (\(first.map { Int($0) }) / \(second.map { Int($0) }))"
      )
    }
    let raw = try Scratch("bench")
    defer { raw.remove() }
    let path = raw.file("raw")
    try run("dd", ["if=/dev/zero", "of=\(path)", "bs=1M", "count=512"])
    report.append("raw file (page cache): \(Int(try dd(path))) MB/s")
    print(report.joined(separator: "\n"))
  }
}
