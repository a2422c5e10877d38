import Foundation
import TestSupport
import Testing

/// The write path end to end on a raw image (FUSE write, fallocate, fsync, truncate → the
/// engine → RawLayer), compared with a mirror file.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct RawWriteTests {
  @Test func writesZeroingAndGrowthOnARawImage() throws {
    let scratch = try Scratch("wraw")
    defer { scratch.remove() }
    let size: UInt64 = 8 << 20
    let image = scratch.file("disk.img")
    try run("truncate", ["-s", "\(size)", image])
    try Qemu.io(image, format: "raw", ["write -P 0x33 0 8M"])
    let mirrorPath = scratch.file("mirror.img")
    try run("cp", [image, mirrorPath])
    let mounted = try MountedImage.mount(image, in: scratch, writable: true)
    var unmounted = false
    defer { if !unmounted { mounted.unmount() } }
    #expect(try statFile(mounted.diskRaw).st_mode & 0o777 == 0o644)
    let disk = try PositionalFile(mounted.diskRaw)
    let mirror = try PositionalFile(mirrorPath)
    var rng = SplitMix64(seed: 5)
    for step in 0..<300 {
      let length = 1 + rng.next() % 200_000
      let offset = rng.next() % (size - length)
      if step % 10 == 9 {
        try disk.zero(at: offset, length: length, punch: step % 20 == 9)
        try mirror.write([UInt8](repeating: 0, count: Int(length)), at: offset)
      } else {
        let bytes = [UInt8](repeating: UInt8(1 + step % 250), count: Int(length))
        try disk.write(bytes, at: offset)
        try mirror.write(bytes, at: offset)
      }
      if step % 50 == 0 { try disk.sync() }
    }
    // Past the end of the disk: ENOSPC, like a block device.
    #expect(throws: (any Error).self) { try disk.write([1], at: size) }
    try disk.sync()
    #expect(try compareFiles(mounted.diskRaw, mirrorPath) == nil)
    // Growing the disk with truncate, as for a raw file.
    try run("truncate", ["-s", "\(size + (1 << 20))", mounted.diskRaw])
    #expect(UInt64(try statFile(mounted.diskRaw).st_size) == size + (1 << 20))
    // Shrinking needs -o allow_shrink.
    #expect(try run("truncate", ["-s", "\(size)", mounted.diskRaw], check: false).status != 0)
    disk.close()
    mounted.unmount()
    unmounted = true
    try run("truncate", ["-s", "\(size + (1 << 20))", mirrorPath])
    #expect(try compareFiles(image, mirrorPath) == nil)
  }
}
