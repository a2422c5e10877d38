import Foundation
import TestSupport
import Testing

/// The request loop with exactly one worker and with four: each serves concurrent buffered and
/// direct reads and writes, starts exactly as many /dev/fuse clones as told, and the image ends
/// up holding what `qemu-img convert -O raw` of it says (the writes applied to a raw oracle).
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct WorkerThreadsTests {
  @Test(arguments: [1, 4])
  func concurrentReadsAndWritesWithThreads(_ threads: Int) throws {
    let scratch = try Scratch("threads")
    defer { scratch.remove() }
    let image = scratch.file("t.qcow2")
    try Qemu.create(image, size: "32M", options: ["cluster_size=65536"])
    try Qemu.scatterPatterns(image, size: 32 << 20, count: 120, seed: 19, unit: 4096, maxUnits: 32)
    let oracle = try Qemu.rawFile(of: image, scratch: scratch)
    let mounted = try MountedImage.mount(image, in: scratch, ["--threads", "\(threads)"], writable: true)
    var unmounted = false
    defer { if !unmounted { mounted.unmount() } }

    // The daemon's /dev/fuse descriptors: one clone per worker, the mount's own, and the one
    // notifications go through.
    let pid =
      try run("pgrep", ["-f", "^\(vdiskfsBinary) .* \(mounted.mountpoint)( |$)"]).stdout
      .split(separator: "\n").first.map(String.init) ?? ""
    let fds = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").filter {
      (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)")) == "/dev/fuse"
    }
    #expect(fds.count == threads + 2, "pid \(pid): \(fds.count) /dev/fuse descriptors")

    // Four writers on disjoint 1 MiB regions (two buffered, two O_DIRECT), two readers of
    // everything, at once; then the same writes on the oracle.
    let disk = mounted.diskRaw
    let script = """
      set -u
      fail=0
      for w in 1 2 3 4; do head -c $((1024 * 1024)) /dev/urandom > '\(scratch.path)'/w$w; done
      write() { # $1 writer, $2 target, $3 extra dd flags
        for i in 0 1 2 3; do
          dd if='\(scratch.path)'/w$1 of="$2" bs=64k count=4 skip=$((i * 4)) seek=$(( ($1 * 5 + i) * 16 + 3 )) \\
             conv=notrunc $3 status=none || return 1
        done
      }
      write 1 '\(disk)' "" & write 2 '\(disk)' "" &
      write 3 '\(disk)' oflag=direct & write 4 '\(disk)' oflag=direct &
      for r in 1 2; do ( for k in 1 2 3; do dd if='\(disk)' of=/dev/null bs=$((r * 96))k status=none || exit 1; done ) & done
      for job in $(jobs -p); do wait $job || fail=1; done
      for w in 1 2 3 4; do write $w '\(oracle)' "" || fail=1; done
      exit $fail
      """
    let r = try sh(script, check: false)
    #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
    // Through the mount (direct reads, past any cache), then in the image once written back.
    let direct = try sh("dd if='\(disk)' iflag=direct bs=1M status=none | cmp - '\(oracle)'", check: false)
    #expect(direct.status == 0, "\(direct.stdout)\(direct.stderr)")
    #expect(try compareFiles(disk, oracle) == nil)
    mounted.unmount()
    unmounted = true
    let converted = try Qemu.rawFile(of: image, scratch: scratch)
    #expect(try compareFiles(converted, oracle) == nil)
  }
}
