import Foundation
import TestSupport
import Testing

/// A real EIO from the file system under an image: one 64 KiB range of the file holding a qcow2
/// image fails every read and write with EIO, the rest works. This kernel has no device-mapper
/// (no `dm-error` target to put under a loop device), so the failing file system is a FUSE one:
/// a first vdiskfs mount of an image (A) whose guest bytes are the qcow2 file B, with A's L2
/// entry for one cluster of B's data made invalid, so that vdiskfs answers that range with EIO.
/// A second vdiskfs mounts B from the first mount's disk.raw; through it:
/// - a read of the bad range fails with EIO, every time; reads elsewhere succeed with the right
///   bytes before and after, and the mount keeps serving;
/// - a write into the bad range fails with EIO, and so do later ones (the lower mount then marks
///   A corrupt and stops writing, as QEMU does), while reads go on working.
/// Afterwards, with A's entry repaired, QEMU finds B consistent and holding the write fsync'd
/// before the faults.
@Suite(.enabled(if: mountTestsEnabled, "needs root and /dev/fuse"))
struct ReadErrorMountTests {
  static let cluster = 64 << 10

  @Test func aBadRangeUnderTheImageFailsOnlyItsOwnIO() throws {
    let scratch = try Scratch("eio-mount")
    defer { scratch.remove() }
    // B: qcow2 with data in its first 4 MiB; A: B's file bytes as a qcow2's guest.
    let inner = scratch.file("inner.qcow2")
    try Qemu.create(inner, size: "16M")
    try Qemu.io(inner, ["write -P 0x41 0 2M", "write -P 0x42 2M 2M"])
    var model = try Qemu.rawContent(of: inner, scratch: scratch)
    let outer = scratch.file("outer.qcow2")
    try Qemu.img("convert", "-f", "raw", "-O", "qcow2", inner, outer)

    // Where B keeps guest 1 MiB: that cluster of A's guest goes bad.
    let badGuest = 1 << 20
    let entry = try #require(
      try Qemu.map(inner).first { $0.start <= badGuest && badGuest < $0.start + $0.length })
    let badHost = try #require(entry.offset) + UInt64(badGuest) - entry.start
    let outerCluster = badHost / UInt64(Self.cluster)
    let l1 = try field(outer, at: 40, width: 8)
    let l2 = try field(outer, at: l1, width: 8) & 0x00FF_FFFF_FFFF_FE00
    let l2Entry = l2 + outerCluster * 8
    let good = try field(outer, at: l2Entry, width: 8)
    #expect(good & 0x00FF_FFFF_FFFF_FE00 != 0, "A's cluster \(outerCluster) is not allocated")
    // qcow2 spec, "Cluster mapping": the host offset must be cluster-aligned.
    try patch(outer, at: l2Entry, good | 0x200, width: 8)
    // B's clusters are 64 KiB too, aligned in its file: B's guest bytes in A's bad cluster.
    #expect(badHost % UInt64(Self.cluster) == 0)
    let bad = badGuest..<badGuest + Self.cluster

    do {
      let lower = try MountedImage.mount(outer, in: scratch, writable: true)
      defer { lower.unmount() }
      let upper = try MountedImage.mount(lower.diskRaw, in: scratch, ["--format", "qcow2"], writable: true)
      var upperMounted = true
      defer { if upperMounted { upper.unmount() } }
      let disk = try DirectFile(upper.diskRaw)
      defer { disk.close() }

      func expectReads(_ range: Range<Int>, _ what: String) {
        do {
          let bytes = try disk.read(at: range.lowerBound, count: range.count)
          let right = FaultCampaign.identical(bytes, Array(model[range]))
          #expect(right, "\(what) reads wrong")
        } catch {
          Issue.record("\(what): \(error)")
        }
      }
      func expectEIO(_ range: Range<Int>, _ what: String) {
        do {
          _ = try disk.read(at: range.lowerBound, count: range.count)
          Issue.record("\(what): the read succeeded")
        } catch let e as POSIXError {
          #expect(e.code == .EIO, "\(what): \(e)")
        } catch {
          Issue.record("\(what): \(error)")
        }
      }
      // A write in place and its fsync, before any fault.
      let elsewhere = pattern(8192, serial: 2)
      #expect(disk.write(elsewhere, at: 3 << 20) == 0)
      model.replaceSubrange((3 << 20)..<(3 << 20) + 8192, with: elsewhere)
      #expect(disk.sync() == 0)

      expectReads(0..<Self.cluster, "the first cluster")
      expectEIO(bad.lowerBound + 4096..<bad.lowerBound + 8192, "the bad range")
      expectReads(3 << 20..<(3 << 20) + 256 << 10, "a range after the bad one")
      expectEIO(bad, "the whole bad range, again")
      expectReads(bad.lowerBound - 8192..<bad.lowerBound, "just before the bad range")
      expectReads(bad.upperBound..<bad.upperBound + 8192, "just after the bad range")
      expectReads(0..<bad.lowerBound, "everything before the bad range")
      expectReads(bad.upperBound..<4 << 20, "everything after the bad range, up to 4 MiB")

      // A write into the bad range: EIO. The lower vdiskfs, finding A's bad entry while
      // writing, marks A corrupt and refuses every later write, as QEMU does: the disk under B
      // has gone read-only, so later writes fail with EIO too, while reads go on working.
      #expect(disk.write(pattern(4096, serial: 1), at: bad.lowerBound + 4096) == EIO)
      #expect(disk.write(pattern(4096, serial: 3), at: 3 << 20) == EIO)
      expectReads(0..<bad.lowerBound, "everything before the bad range, after the failed writes")
      expectReads(bad.upperBound..<4 << 20, "everything after the bad range, after the failed writes")
      #expect(isMounted(upper.mountpoint) && isMounted(lower.mountpoint))
      disk.close()
      upper.unmount()
      upperMounted = false
    }

    // A repaired, B as the mounts left it: consistent, with the fsync'd write.
    try patch(outer, at: l2Entry, good, width: 8)
    let left = scratch.file("left.qcow2")
    try Qemu.img("convert", "-O", "raw", outer, left)
    try Qemu.expectCheck(left, format: "qcow2", leaksAllowed: true, "B after the faults")
    let content = try Qemu.rawContent(of: left, format: "qcow2", scratch: scratch)
    let same = FaultCampaign.identical(content, model)
    #expect(same, "first difference at \(firstDifference(content, model) ?? -1)")
  }
}
