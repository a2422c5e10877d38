import Foundation
import TestSupport
import Testing

/// Data runs of a file found with lseek(SEEK_DATA/SEEK_HOLE) (whence 3 and 4 on Linux).
func dataRuns(of path: String) throws -> [Range<UInt64>] {
  let fd = open(path, O_RDONLY)
  guard fd >= 0 else { throw POSIXError(.EIO) }
  defer { close(fd) }
  var runs: [Range<UInt64>] = []
  var position: off_t = 0
  while true {
    let data = lseek(fd, position, 3)
    if data < 0 { break }  // ENXIO: no more data
    let hole = lseek(fd, data, 4)
    guard hole > data else { break }
    runs.append(UInt64(data)..<UInt64(hole))
    position = hole
  }
  return runs
}

/// qemu-img map's data:true ranges, merged.
func qemuDataRuns(_ image: String) throws -> [Range<UInt64>] {
  var runs: [Range<UInt64>] = []
  for e in try Qemu.map(image) where e.data {
    if let last = runs.last, last.upperBound == e.start {
      runs[runs.count - 1] = last.lowerBound..<(e.start + e.length)
    } else {
      runs.append(e.start..<(e.start + e.length))
    }
  }
  return runs
}

@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct SparseTests {
  @Test func seekDataAndHoleAgreeWithQemuImgMap() throws {
    let scratch = try Scratch("seek")
    defer { scratch.remove() }
    try Qemu.create(scratch.file("base.qcow2"), size: "32M")
    try Qemu.io(
      scratch.file("base.qcow2"), ["write -P 0x10 1M 256k", "write -P 0x11 20M 64k", "write -z 24M 1M"])
    let img = scratch.file("top.qcow2")
    try Qemu.create(img, size: "48M", backing: "base.qcow2", backingFormat: "qcow2")
    try Qemu.io(
      img, ["write -P 0x20 1088k 64k", "write -P 0x21 40M 128k", "write -z 20M 64k", "write -P 9 0 4k"])
    let mounted = try MountedImage.mount(img, in: scratch)
    defer { mounted.unmount() }
    let ours = try dataRuns(of: mounted.diskRaw)
    let theirs = try qemuDataRuns(img)
    #expect(ours == theirs)
    #expect(!ours.isEmpty)
    // st_blocks reports the data the chain holds.
    let st = try statFile(mounted.diskRaw)
    let dataBytes = theirs.reduce(UInt64(0)) { $0 + ($1.upperBound - $1.lowerBound) }
    #expect(UInt64(st.st_blocks) * 512 == dataBytes)
  }

  /// A 1 TiB sparse image with writes near its end: mounts fast, reads right, seeks right.
  @Test func oneTebibyteSparseImage() throws {
    let scratch = try Scratch("tib")
    defer { scratch.remove() }
    let img = scratch.file("big.qcow2")
    try Qemu.create(img, size: "1T")
    let tib: UInt64 = 1 << 40
    try Qemu.io(
      img,
      ["write -P 0x5a \(tib - 65536) 65536", "write -P 0x5b \(tib - 5_000_000) 3000", "write -P 1 0 512"])
    let mounted = try MountedImage.mount(img, in: scratch)
    defer { mounted.unmount() }
    #expect(UInt64(try statFile(mounted.diskRaw).st_size) == tib)
    let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: mounted.diskRaw))
    defer { try? handle.close() }
    try handle.seek(toOffset: tib - 65536 - 10)
    let tail = try #require(try handle.read(upToCount: 70000))
    #expect(tail.count == 65546)
    #expect(tail.prefix(10).allSatisfy { $0 == 0 })
    #expect(tail.dropFirst(10).allSatisfy { $0 == 0x5a })
    try handle.seek(toOffset: tib - 5_000_000)
    #expect(try handle.read(upToCount: 3001).map(Array.init) == [UInt8](repeating: 0x5b, count: 3000) + [0])
    #expect(try dataRuns(of: mounted.diskRaw) == (try qemuDataRuns(img)))
  }
}
