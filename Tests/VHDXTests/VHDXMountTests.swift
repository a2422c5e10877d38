import Foundation
import TestSupport
import Testing
import VDiskCore

/// One mount through the real binary: disk.raw must equal qemu's raw conversion.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct VHDXMountTests {
  @Test func mountedDiskMatchesQemu() throws {
    let scratch = try Scratch("vhdx-mount")
    defer { scratch.remove() }
    let image = scratch.file("m.vhdx")
    try Qemu.create(image, format: "vhdx", size: "24M", options: ["block_size=1M", "log_size=1M"])
    try Qemu.scatterPatterns(image, format: "vhdx", size: 24 << 20, count: 30, seed: 3, maxUnits: 2048)
    try Qemu.io(image, format: "vhdx", ["write -z 8M 2M"])
    let raw = try Qemu.rawFile(of: image, scratch: scratch)
    let mnt = try scratch.directory("mnt")
    try run("timeout", ["60", vdiskfsBinary, image, mnt, "-o", "ro"])
    defer {
      if (try? run("fusermount3", ["-u", mnt], check: false))?.status != 0 {
        _ = try? run("fusermount3", ["-u", "-z", mnt], check: false)
      }
      for _ in 0..<50 where isMounted(mnt) { usleep(20_000) }
    }
    let r = try run("cmp", [mnt + "/disk.raw", raw], check: false)
    #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
  }

  func isMounted(_ path: String) -> Bool {
    guard let text = try? String(contentsOfFile: "/proc/mounts", encoding: .utf8) else { return false }
    return text.split(separator: "\n").contains {
      $0.split(separator: " ").dropFirst().first == Substring(path)
    }
  }
}
