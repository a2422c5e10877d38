import Foundation
import RBDStore
import RemoteStore
import Synchronization
import TestSupport
import Testing
import VDiskCore

/// The RBD store against the test process's Ceph cluster: image heads and snapshots read back
/// byte for byte as `rbd export` gives them, writes, flushes and resizes seen by `rbd export`, and
/// the exclusive lock keeping two writers apart.
@Suite struct RBDStoreTests {
  @Test func readsAnImportedImageByteForByte() throws {
    let cluster = try CephCluster.shared()
    let scratch = try Scratch("rbd-read")
    defer { scratch.remove() }
    let name = rbdImageName("read")
    let content = rbdTestBytes(5 << 20 + 4321, seed: 1)
    try rbdImport(content, as: name, into: cluster, scratch: scratch)

    for id in [nil, "admin", "client.admin"] {
      var options = rbdOptions(cluster)
      options.cephID = id
      let object = try RBDStore.open("rbd:rbd/\(name)", writable: false, options: options)
      #expect(object.location == "rbd:rbd/\(name)")
      #expect(object.version.size == UInt64(content.count))
      #expect(object.version.tag.hasPrefix("rbd:") && object.version.tag.hasSuffix("@head"))
      #expect(!object.isWritable)
      #expect(object.parallelism == 8)
      #expect(try readAll(object, piece: 1 << 20) == content)
      // Odd pieces, the end of the image, and past it.
      #expect(try fetch(object, 777, at: 12345) == Array(content[12345..<13122]))
      #expect(try fetch(object, 10000, at: UInt64(content.count - 100)) == Array(content.suffix(100)))
      #expect(try fetch(object, 10, at: UInt64(content.count)).isEmpty)
      #expect(throws: VDiskError.self) {
        try object.store(UnsafeRawBufferPointer(start: nil, count: 0), at: 0)
      }
    }
  }

  /// librbd's image handle serves several threads at once (the cache's connection pool).
  @Test func parallelFetchesReturnTheirOwnBytes() throws {
    let cluster = try CephCluster.shared()
    let scratch = try Scratch("rbd-parallel")
    defer { scratch.remove() }
    let name = rbdImageName("parallel")
    let content = rbdTestBytes(8 << 20, seed: 14)
    try rbdImport(content, as: name, into: cluster, scratch: scratch)
    let object = try RBDStore.open("rbd:rbd/\(name)", writable: false, options: rbdOptions(cluster))
    let piece = 96 * 1024 + 17
    let pieces = content.count / piece
    let mismatches = Atomic(0)
    DispatchQueue.concurrentPerform(iterations: pieces) { index in
      let offset = (index * 7919 % pieces) * piece
      let bytes = try? fetch(object, piece, at: UInt64(offset))
      if bytes != Array(content[offset..<offset + piece]) { mismatches.add(1, ordering: .relaxed) }
    }
    #expect(mismatches.load(ordering: .relaxed) == 0)
  }

  @Test func aSnapshotKeepsItsContentWhenTheHeadChanges() throws {
    let cluster = try CephCluster.shared()
    let scratch = try Scratch("rbd-snap")
    defer { scratch.remove() }
    let name = rbdImageName("snap")
    let old = rbdTestBytes(3 << 20, seed: 2)
    try rbdImport(old, as: name, into: cluster, scratch: scratch)
    try cluster.rbdSnapshot(image: name, snapshot: "before")

    let head = try RBDStore.open("rbd:rbd/\(name)", writable: true, options: rbdOptions(cluster))
    let patch = rbdTestBytes(70000, seed: 3)
    try patch.withUnsafeBytes { try head.store($0, at: 1_000_000) }
    try head.flush()

    let snapshot = try RBDStore.open("rbd:rbd/\(name)@before", writable: false, options: rbdOptions(cluster))
    #expect(!snapshot.version.tag.hasSuffix("@head"))
    #expect(snapshot.version.tag.hasPrefix(head.version.tag.dropLast("head".count)))
    #expect(try readAll(snapshot) == old)
    var new = old
    new.replaceSubrange(1_000_000..<1_070_000, with: patch)
    #expect(try readAll(head) == new)
    withExtendedLifetime(head) {}

    // A snapshot opened read-write: read-only (the mount falls back to a read-only view).
    let error = vdiskError {
      _ = try RBDStore.open("rbd:rbd/\(name)@before", writable: true, options: rbdOptions(cluster))
    }
    #expect(error?.kind == .readOnly)
  }

  @Test func writesAndFlushesReachTheImage() throws {
    let cluster = try CephCluster.shared()
    let scratch = try Scratch("rbd-write")
    defer { scratch.remove() }
    let name = rbdImageName("write")
    var expected = rbdTestBytes(9 << 20, seed: 4)
    try rbdImport(expected, as: name, into: cluster, scratch: scratch)

    do {
      let object = try RBDStore.open("rbd:rbd/\(name)", writable: true, options: rbdOptions(cluster))
      #expect(object.isWritable)
      // Across the 4 MiB object boundary, at the start, and the last byte.
      for (offset, count, seed) in [(4 << 20 - 1000, 300_000, 5), (0, 512, 6), (9 << 20 - 1, 1, 7)]
        as [(Int, Int, UInt64)]
      {
        let bytes = rbdTestBytes(count, seed: seed)
        try bytes.withUnsafeBytes { try object.store($0, at: UInt64(offset)) }
        expected.replaceSubrange(offset..<offset + count, with: bytes)
      }
      // Past the end: refused, nothing written.
      let outside = [UInt8](repeating: 1, count: 2)
      #expect(throws: RemoteFailure.self) {
        try outside.withUnsafeBytes { try object.store($0, at: 9 << 20 - 1) }
      }
      try object.flush()
      #expect(try readAll(object) == expected)
      withExtendedLifetime(object) {}
    }
    #expect(try rbdExported(cluster, image: name, scratch: scratch) == expected)
  }

  @Test func resizeGrowsTheImage() throws {
    let cluster = try CephCluster.shared()
    let scratch = try Scratch("rbd-resize")
    defer { scratch.remove() }
    let name = rbdImageName("resize")
    let content = rbdTestBytes(1 << 20, seed: 8)
    try rbdImport(content, as: name, into: cluster, scratch: scratch)

    do {
      let object = try RBDStore.open("rbd:rbd/\(name)", writable: true, options: rbdOptions(cluster))
      try object.resize(to: 6 << 20)
      #expect((object as? RBDObject)?.currentSize == 6 << 20)
      #expect(object.version.size == 1 << 20)
      let tail = rbdTestBytes(4096, seed: 9)
      try tail.withUnsafeBytes { try object.store($0, at: 6 << 20 - 4096) }
      try object.flush()
      #expect(try fetch(object, 8192, at: 6 << 20 - 8192) == [UInt8](repeating: 0, count: 4096) + tail)
      withExtendedLifetime(object) {}
    }
    let exported = try rbdExported(cluster, image: name, scratch: scratch)
    #expect(exported.count == 6 << 20)
    #expect(Array(exported.prefix(1 << 20)) == content)
    #expect(exported[(1 << 20)..<(6 << 20 - 4096)].allSatisfy { $0 == 0 })
    #expect(Array(exported.suffix(4096)) == rbdTestBytes(4096, seed: 9))
  }

  @Test func aSecondWriterIsRefusedWhileTheFirstHoldsTheLock() throws {
    let cluster = try CephCluster.shared()
    let scratch = try Scratch("rbd-lock")
    defer { scratch.remove() }
    let name = rbdImageName("lock")
    try rbdImport(rbdTestBytes(1 << 20, seed: 10), as: name, into: cluster, scratch: scratch)
    let location = "rbd:rbd/\(name)"

    do {
      let first = try RBDStore.open(location, writable: true, options: rbdOptions(cluster))
      let error = vdiskError { _ = try RBDStore.open(location, writable: true, options: rbdOptions(cluster)) }
      #expect(error?.kind == .locked)
      #expect(error?.description.contains("held by another client") == true)
      // Readers are not writers: a read-only open works beside the lock.
      let reader = try RBDStore.open(location, writable: false, options: rbdOptions(cluster))
      #expect(try fetch(reader, 16, at: 0) == Array(rbdTestBytes(16, seed: 10)))
      // The first still owns the lock and writes.
      try [UInt8](repeating: 9, count: 512).withUnsafeBytes { try first.store($0, at: 0) }
      try first.flush()
      withExtendedLifetime(first) {}
    }
    // Released with the first object: a new writer gets it.
    let second = try RBDStore.open(location, writable: true, options: rbdOptions(cluster))
    #expect(try fetch(second, 512, at: 0) == [UInt8](repeating: 9, count: 512))
    withExtendedLifetime(second) {}
  }

  /// A live client of the automatic lock policy (QEMU, rbd-nbd) would give the lock away if
  /// asked; the store refuses instead of taking it over mid-write.
  @Test func aLiveLibrbdWriterKeepsItsLock() async throws {
    let cluster = try CephCluster.shared()
    let scratch = try Scratch("rbd-holder")
    defer { scratch.remove() }
    let name = rbdImageName("held")
    try rbdImport(rbdTestBytes(1 << 20, seed: 13), as: name, into: cluster, scratch: scratch)
    let holder = try await RBDLockHolder(cluster, image: name, scratch: scratch)
    let error = vdiskError {
      _ = try RBDStore.open("rbd:rbd/\(name)", writable: true, options: rbdOptions(cluster))
    }
    #expect(error?.kind == .locked)
    #expect(error?.description.contains("held by another client") == true)
    #expect(try cluster.rbd(["status", "rbd/\(name)"]).stdout.contains("watcher="))
    _ = try await holder.release().value
    // Gone: its lock is free again.
    let object = try RBDStore.open("rbd:rbd/\(name)", writable: true, options: rbdOptions(cluster))
    #expect(try fetch(object, 4, at: 0) == Array("held".utf8))
  }

  /// Without `-o ceph_conf=`, the cluster is the one `CEPH_CONF` names.
  @Test func theClusterComesFromCEPH_CONFWithoutTheOption() throws {
    let cluster = try CephCluster.shared()
    let name = rbdImageName("env")
    try cluster.rbd(["create", "--size", "3M", "rbd/\(name)"])
    var options = rbdOptions(cluster)
    options.cephConf = nil
    setenv("CEPH_CONF", cluster.confPath, 1)
    defer { unsetenv("CEPH_CONF") }
    let object = try RBDStore.open("rbd:rbd/\(name)", writable: false, options: options)
    #expect(object.version.size == 3 << 20)
  }

  @Test func anImageWithoutExclusiveLockOpensReadOnly() throws {
    let cluster = try CephCluster.shared()
    let name = rbdImageName("nolock")
    try cluster.rbd(["create", "--size", "4M", "--image-feature", "layering", "rbd/\(name)"])
    let error = vdiskError {
      _ = try RBDStore.open("rbd:rbd/\(name)", writable: true, options: rbdOptions(cluster))
    }
    #expect(error?.kind == .readOnly)
    #expect(error?.description.contains("exclusive-lock") == true)
    let reader = try RBDStore.open("rbd:rbd/\(name)", writable: false, options: rbdOptions(cluster))
    #expect(reader.version.size == 4 << 20)
  }
}
