import Glibc
import Logging
import TestSupport
import Testing
import VDiskCore

@testable import VDiskFUSE

/// Which pages a change makes stale, without FUSE; and the metadata setattr keeps.
@Suite("Page cache registry and setattr")
struct PageCacheRegistryTests {
  typealias Notice = PageCacheRegistry.Notice

  /// disk.raw (inode 2) over a 16 MiB layer, p1 (inode 3) = 1 MiB + 4 MiB of it, p2 (inode 4) =
  /// 8 MiB + 1 MiB, and a read-only view of another content (inode 5).
  func withViews(_ body: (DiskView, DiskView, DiskView, DiskView) throws -> Void) throws {
    let scratch = try Scratch("registry")
    defer { scratch.remove() }
    let layer = try TestLayer(path: scratch.file("disk"), size: 16 << 20, segments: [])
    let other = try TestLayer(path: scratch.file("other"), size: 1 << 20, segments: [])
    let disk = DiskView(chain: LayerChain(top: layer), writable: true)
    let p1 = DiskView(
      content: SliceView(parent: disk.content, offset: 1 << 20, length: 4 << 20), writable: true)
    let p2 = DiskView(
      content: SliceView(parent: disk.content, offset: 8 << 20, length: 1 << 20), writable: true)
    let snapshot = DiskView(chain: LayerChain(top: other), writable: false)
    try body(disk, p1, p2, snapshot)
  }

  @Test func onlyWholeWritableViewsTakePageCacheWrites() throws {
    try withViews { disk, p1, _, snapshot in
      #expect(PageCacheRegistry.allowsPageCacheWrites(disk))
      #expect(!PageCacheRegistry.allowsPageCacheWrites(p1))
      #expect(!PageCacheRegistry.allowsPageCacheWrites(snapshot))
      let placement = PageCacheRegistry.placement(of: p1)
      #expect(placement.base == ObjectIdentifier(disk.content))
      #expect(placement.offset == 1 << 20 && placement.length == 4 << 20)
    }
  }

  @Test func aChangeReachesEveryOpenAliasInItsOwnOffsets() throws {
    try withViews { disk, p1, p2, _ in
      let r = PageCacheRegistry()
      r.opened(2, view: disk)
      r.opened(3, view: p1)
      r.opened(4, view: p2)
      // Nothing is open on nothing: no job.
      #expect(r.job(changed: disk, 0..<0, through: 2, kernelKeepsOwnPages: true) == nil)
      // A buffered write through disk.raw at 2 MiB: only p1, at 1 MiB of it; no writer to wait for.
      let buffered = try #require(
        r.job(changed: disk, (2 << 20)..<(2 << 20) + 4096, through: 2, kernelKeepsOwnPages: true))
      #expect(buffered.notices == [Notice(inode: 3, offset: 1 << 20, length: 4096)])
      #expect(!buffered.mayWaitForWriters)
      // A direct write through disk.raw across p1's end: disk.raw itself too.
      let direct = try #require(
        r.job(changed: disk, (5 << 20) - 4096..<(5 << 20) + 4096, through: 2, kernelKeepsOwnPages: false))
      #expect(
        Set(direct.notices.map(\.inode)) == [2, 3]
          && direct.notices.contains(Notice(inode: 3, offset: (4 << 20) - 4096, length: 4096))
          && direct.notices.contains(Notice(inode: 2, offset: (5 << 20) - 4096, length: 8192)))
      #expect(direct.mayWaitForWriters)
      // A write through p2: disk.raw at p2's offset; it may wait for disk.raw's buffered writers.
      let partition = try #require(r.job(changed: p2, 0..<512, through: 4, kernelKeepsOwnPages: false))
      #expect(
        Set(partition.notices) == [
          Notice(inode: 2, offset: 8 << 20, length: 512), Notice(inode: 4, offset: 0, length: 512),
        ])
      #expect(partition.mayWaitForWriters)
    }
  }

  /// Closed inodes keep their pages (keep_cache): the next change drops them whole, once.
  @Test func aClosedInodeIsDroppedWholeOnceThenForgotten() throws {
    try withViews { disk, p1, _, snapshot in
      let r = PageCacheRegistry()
      r.opened(3, view: p1)
      r.opened(5, view: snapshot)
      r.closed(3)
      let job = try #require(
        r.job(changed: disk, (1 << 20)..<(1 << 20) + 1, through: 2, kernelKeepsOwnPages: true))
      #expect(job.notices == [Notice(inode: 3, offset: 0, length: 0)])
      #expect(r.job(changed: disk, (1 << 20)..<(1 << 20) + 1, through: 2, kernelKeepsOwnPages: true) == nil)
      // The other content never hears of disk.raw's changes.
      #expect(r.job(changed: disk, 0..<(16 << 20), through: 2, kernelKeepsOwnPages: false) == nil)
    }
  }

  @Test func setAttributesKeepsModeOwnerAndTimesPerNode() throws {
    let scratch = try Scratch("setattr")
    defer { scratch.remove() }
    let layer = try TestLayer(path: scratch.file("disk"), size: 1 << 20, segments: [])
    let tree = VirtualTree(chain: LayerChain(top: layer), writable: true, logger: Logger(label: "test"))
    let now = NodeTime(seconds: 1_700_000_000, nanoseconds: 42)
    let untouched = try tree.attributes(of: 1)
    let a = try tree.setAttributes(
      2,
      AttributeChange(
        permissions: 0o100600, uid: 7, modificationTime: .at(NodeTime(seconds: 5, nanoseconds: 6))),
      now: now)
    #expect(a.permissions == 0o600 && a.uid == 7 && a.gid == 0)
    #expect(a.modified == NodeTime(seconds: 5, nanoseconds: 6) && a.changed == now)
    #expect(a.accessed == untouched.accessed)
    #expect(try tree.attributes(of: 2) == a)
    let b = try tree.setAttributes(2, AttributeChange(gid: 9, accessTime: .now), now: now)
    #expect(b.permissions == 0o600 && b.uid == 7 && b.gid == 9 && b.accessed == now)
    #expect(try tree.attributes(of: 1) == untouched)
    // A size change of a disk that cannot grow fails and changes nothing else.
    #expect(throws: (any Error).self) {
      try tree.setAttributes(2, AttributeChange(size: 1, permissions: 0o777))
    }
    #expect(try tree.attributes(of: 2).permissions == 0o600)
    #expect(throws: (any Error).self) { try tree.setAttributes(99, AttributeChange(permissions: 0o777)) }
  }
}
