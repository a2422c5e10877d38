import Glibc
import Logging
import TestSupport
import Testing
import VDiskCore

@testable import VDiskFUSE

@Suite("VirtualTree")
struct VirtualTreeTests {
  let logger = Logger(label: "test")

  func withTree(
    size: UInt64 = 1 << 20, segments: [TestLayer.Segment] = [], writable: Bool = false,
    _ body: (VirtualTree, TestLayer) throws -> Void
  ) throws {
    let scratch = try Scratch("tree")
    defer { scratch.remove() }
    let layer = try TestLayer(path: scratch.file("disk"), size: size, segments: segments)
    let tree = VirtualTree(chain: LayerChain(top: layer), writable: writable, logger: logger)
    try body(tree, layer)
  }

  func failure(_ body: () throws -> Void) -> Int32? {
    do {
      try body()
      return nil
    } catch {
      return errnoValue(for: error, logger: logger)
    }
  }

  @Test func lookupFindsDiskRawAndDots() throws {
    try withTree { tree, _ in
      try #expect(tree.lookup(parent: 1, name: "disk.raw").inode == 2)
      try #expect(tree.lookup(parent: 1, name: ".").inode == 1)
      try #expect(tree.lookup(parent: 1, name: "..").inode == 1)
      #expect(failure { _ = try tree.lookup(parent: 1, name: "missing") } == ENOENT)
      #expect(failure { _ = try tree.lookup(parent: 2, name: "x") } == ENOTDIR)
      #expect(failure { _ = try tree.lookup(parent: 99, name: "x") } == ENOENT)
      #expect(failure { _ = try tree.node(0) } == ENOENT)
    }
  }

  @Test func attributesOfRootAndFile() throws {
    let segments = [TestLayer.Segment(start: 65536, end: 131072, kind: .zero)]
    try withTree(size: 1 << 20, segments: segments) { tree, _ in
      let root = try tree.attributes(of: 1)
      #expect(root.isDirectory && root.permissions == 0o555 && root.linkCount == 2)
      let file = try tree.attributes(of: 2)
      #expect(!file.isDirectory)
      #expect(file.permissions == 0o444)
      #expect(file.size == 1 << 20)
      #expect(file.blocks == ((1 << 20) - 65536) / 512)
      #expect(file.linkCount == 1)
    }
    try withTree(writable: true) { tree, _ in
      try #expect(tree.attributes(of: 2).permissions == 0o644)
    }
  }

  @Test func blocksAreZeroWhenTheAllocationMapFails() throws {
    let segments = [TestLayer.Segment(start: 8192, end: 16384, kind: .corrupt)]
    try withTree(segments: segments) { tree, _ in
      try #expect(tree.attributes(of: 2).blocks == 0)
      try #expect(tree.attributes(of: 2).size == 1 << 20)
    }
  }

  @Test func entriesListDotsAndChildren() throws {
    try withTree { tree, _ in
      try #expect(tree.entries(of: 1).map(\.name) == [".", "..", "disk.raw"])
      try #expect(tree.entries(of: 1).map(\.inode) == [1, 1, 2])
      #expect(failure { _ = try tree.entries(of: 2) } == ENOTDIR)
    }
  }

  @Test func builderNestsDirectories() throws {
    let scratch = try Scratch("tree")
    defer { scratch.remove() }
    let layer = try TestLayer(path: scratch.file("disk"), size: 65536, segments: [])
    let view = DiskView(chain: LayerChain(top: layer), writable: false)
    var builder = VirtualTree.Builder()
    builder.addFile(named: "disk.raw", view: view)
    let snapshots = builder.addDirectory(named: "snapshots")
    let one = builder.addDirectory(named: "one", in: snapshots)
    let file = builder.addFile(named: "disk.raw", view: view, in: one)
    let tree = VirtualTree(builder, logger: logger)
    try #expect(tree.lookup(parent: 1, name: "snapshots").inode == snapshots)
    try #expect(tree.lookup(parent: one, name: "disk.raw").inode == file)
    try #expect(tree.lookup(parent: one, name: "..").inode == snapshots)
    try #expect(tree.attributes(of: 1).linkCount == 3)
    try #expect(tree.entries(of: snapshots).map(\.name) == [".", "..", "one"])
    #expect(tree.nodeCount == 5)
    #expect(tree.views.count == 2)
  }

  @Test func openChecksModeAndKind() throws {
    try withTree { tree, _ in
      #expect(failure { _ = try tree.open(2, flags: O_RDONLY) } == nil)
      #expect(failure { _ = try tree.open(2, flags: O_RDWR) } == EROFS)
      #expect(failure { _ = try tree.open(2, flags: O_WRONLY) } == EROFS)
      #expect(failure { _ = try tree.open(2, flags: O_RDONLY | O_TRUNC) } == EROFS)
      #expect(failure { _ = try tree.open(1, flags: O_RDONLY) } == EISDIR)
      #expect(failure { try tree.openDirectory(1) } == nil)
      #expect(failure { try tree.openDirectory(2) } == ENOTDIR)
      #expect(failure { try tree.checkWritable(2) } == EROFS)
      #expect(failure { try tree.checkWritable(1) } == EROFS)
    }
    // A writable view accepts writers (the mount made it writable only over a writable top).
    try withTree(writable: true) { tree, _ in
      #expect(failure { _ = try tree.open(2, flags: O_RDWR) } == nil)
      #expect(failure { try tree.checkWritable(2) } == nil)
      #expect(failure { try tree.checkWritable(1) } == EROFS)
    }
  }

  @Test func readClampsToTheFileSize() throws {
    let size: UInt64 = 1 << 20
    let segments = [TestLayer.Segment(start: 4096, end: 8192, kind: .zero)]
    try withTree(size: size, segments: segments) { tree, layer in
      var buffer = [UInt8](repeating: 0xEE, count: 8192)
      let n = try buffer.withUnsafeMutableBytes { try tree.read(2, into: $0, at: 1000) }
      #expect(n == 8192)
      #expect(buffer == layer.expected(at: 1000, count: 8192))
      let tail = try buffer.withUnsafeMutableBytes { try tree.read(2, into: $0, at: size - 100) }
      #expect(tail == 100)
      #expect(Array(buffer[0..<100]) == layer.expected(at: size - 100, count: 100))
      try #expect(buffer.withUnsafeMutableBytes { try tree.read(2, into: $0, at: size) } == 0)
      try #expect(buffer.withUnsafeMutableBytes { try tree.read(2, into: $0, at: size + 5000) } == 0)
      #expect(
        failure { _ = try buffer.withUnsafeMutableBytes { try tree.read(1, into: $0, at: 0) } } == EISDIR)
    }
  }

  @Test func readOfACorruptRangeIsEIO() throws {
    let segments = [TestLayer.Segment(start: 8192, end: 16384, kind: .corrupt)]
    try withTree(segments: segments) { tree, _ in
      var buffer = [UInt8](repeating: 0, count: 4096)
      #expect(
        failure { _ = try buffer.withUnsafeMutableBytes { try tree.read(2, into: $0, at: 8192) } } == EIO)
      #expect(failure { _ = try buffer.withUnsafeMutableBytes { try tree.read(2, into: $0, at: 0) } } == nil)
    }
  }

  @Test func seekDataAndHole() throws {
    let size: UInt64 = 1 << 20
    let segments = [
      TestLayer.Segment(start: 65536, end: 131072, kind: .zero),
      TestLayer.Segment(start: 131072, end: 196608, kind: .unallocated),
      TestLayer.Segment(start: size - 65536, end: size, kind: .zero),
    ]
    try withTree(size: size, segments: segments) { tree, _ in
      try #expect(tree.seek(2, from: 0, to: .data) == 0)
      try #expect(tree.seek(2, from: 0, to: .hole) == 65536)
      try #expect(tree.seek(2, from: 70000, to: .data) == 196608)
      try #expect(tree.seek(2, from: 70000, to: .hole) == 70000)
      try #expect(tree.seek(2, from: 200000, to: .hole) == size - 65536)
      #expect(failure { _ = try tree.seek(2, from: size - 100, to: .data) } == ENXIO)
      try #expect(tree.seek(2, from: size - 100, to: .hole) == size - 100)
      #expect(failure { _ = try tree.seek(2, from: size, to: .hole) } == ENXIO)
      #expect(failure { _ = try tree.seek(2, from: size, to: .data) } == ENXIO)
    }
  }
}
