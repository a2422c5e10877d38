import Foundation
import TestSupport
import Testing

@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct ConcurrencyTests {
  /// Several processes read the same disk.raw at once, in different orders and sizes.
  @Test func concurrentReadersFromSeveralProcesses() throws {
    let scratch = try Scratch("conc")
    defer { scratch.remove() }
    let src = scratch.file("src.qcow2")
    try Qemu.create(src, size: "32M", options: ["cluster_size=4096"])
    try Qemu.scatterPatterns(src, size: 32 << 20, count: 200, seed: 11, unit: 4096, maxUnits: 32)
    let image = scratch.file("c.qcow2")
    // Half compressed, half plain: convert compressed, then rewrite parts uncompressed.
    try Qemu.img("convert", "-c", "-O", "qcow2", "-o", "cluster_size=4096", src, image)
    try Qemu.scatterPatterns(image, size: 32 << 20, count: 100, seed: 12, unit: 4096, maxUnits: 16)
    let oracle = try Qemu.rawFile(of: image, scratch: scratch)
    let mounted = try MountedImage.mount(image, in: scratch)
    defer { mounted.unmount() }
    let script = """
      set -u
      fail=0
      for bs in 4k 64k 1M 13k 128k 1536; do
        ( dd if='\(mounted.diskRaw)' bs=$bs status=none | cmp -s - '\(oracle)' ) || { echo "bs=$bs differs"; exit 1; } &
      done
      # Random-offset readers: compare slices with the oracle.
      for r in 1 2; do
        (
          for i in $(seq 1 60); do
            off=$(( (RANDOM * 32768 + RANDOM) % (32 * 1024 * 1024 - 70000) ))
            cmp -s <(tail -c +$((off + 1)) '\(mounted.diskRaw)' | head -c 65537) \
                   <(tail -c +$((off + 1)) '\(oracle)' | head -c 65537) || { echo "slice at $off differs"; exit 1; }
          done
        ) &
      done
      for job in $(jobs -p); do wait $job || fail=1; done
      exit $fail
      """
    let r = try sh(script, check: false)
    #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
  }
}
