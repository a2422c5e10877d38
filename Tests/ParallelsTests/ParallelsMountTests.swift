import Foundation
import TestSupport
import Testing

/// One mount through the real binary: disk.raw must equal qemu's raw conversion.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct ParallelsMountTests {
  @Test func mountedDiskMatchesQemu() throws {
    let scratch = try Scratch("prl-mount")
    defer { scratch.remove() }
    let image = scratch.file("m.hds")
    try Qemu.create(image, format: "parallels", size: "24M", options: ["cluster_size=256k"])
    try Qemu.scatterPatterns(image, format: "parallels", size: 24 << 20, count: 30, seed: 3, maxUnits: 2048)
    let raw = try Qemu.rawFile(of: image, scratch: scratch)
    try withReadOnlyMount(image, in: scratch) { mnt in
      let r = try run("cmp", [mnt + "/disk.raw", raw], check: false)
      #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
    }
  }
}
