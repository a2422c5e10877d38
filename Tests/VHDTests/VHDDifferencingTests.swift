import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore
import VHD

/// Differencing VHDs (qemu cannot make them): built here over a qemu-made dynamic parent, with
/// known content, checked against the parent's qemu conversion overlaid with the child's sectors.
@Suite struct VHDDifferencingTests {
  static let size: UInt64 = 4 << 20
  /// Sectors (within the block) that the child's block 1 holds; block 3 it holds whole.
  static let block1Sectors = Array(0..<8) + Array(100..<228)

  /// The guest sectors the child holds (its bitmap bits); the parent shows through elsewhere.
  static var childSectors: Set<Int> {
    let perBlock = Int(VHDBuilder(virtualSize: size).blockSize) / 512
    return Set(block1Sectors.map { perBlock + $0 } + (3 * perBlock..<4 * perBlock))
  }

  /// A parent with patterns, and a child over it: block 1 with sectors 0-7 and 100-227 set (its
  /// clear sectors hold 0xEE garbage that must not show), block 3 fully set, others unallocated.
  /// Returns the expected guest bytes.
  static func makePair(
    in scratch: Scratch, locators: [(String, [UInt8])]? = nil, parentUUID: [UInt8]? = nil,
    childName: String = "child.vhd", parentName: String = "parent.vhd"
  ) throws -> (child: String, parent: String, expected: [UInt8]) {
    let parent = scratch.file("parent.vhd")
    try Qemu.create(parent, format: "vpc", size: "\(size)", options: ["force_size=on"])
    try Qemu.io(parent, format: "vpc", ["write -P 0x31 0 4M", "write -P 0x32 600k 300k"])
    var expected = try Qemu.rawContent(of: parent, format: "vpc", scratch: scratch)
    let parentID = try readBytes(parent, at: try fileSize(parent) - 512 + 68, count: 16)

    var child = VHDBuilder(virtualSize: size)
    child.parentUUID = parentUUID ?? parentID
    child.parentName = parentName
    child.locators =
      locators ?? [
        ("W2ku", VHDBuilder.utf16LE("C:\\images\\parent.vhd")), ("W2ru", VHDBuilder.utf16LE(".\\parent.vhd")),
      ]
    let block = Int(child.blockSize)
    var data1 = [UInt8](repeating: 0xEE, count: block)
    var bitmap1 = [UInt8](repeating: 0, count: 512)
    bitmap1[0] = 0xFF  // sectors 0-7
    for s in 100..<228 { bitmap1[s / 8] |= 0x80 >> UInt8(s % 8) }
    for s in block1Sectors {
      for i in 0..<512 {
        data1[s * 512 + i] = UInt8(truncatingIfNeeded: s &+ i)
        expected[block + s * 512 + i] = UInt8(truncatingIfNeeded: s &+ i)
      }
    }
    let data3 = [UInt8](repeating: 0x77, count: block)
    expected.replaceSubrange(3 * block..<4 * block, with: data3)
    child.blocks = [1: (bitmap1, data1), 3: ([UInt8](repeating: 0xFF, count: 512), data3)]
    let path = scratch.file(childName)
    try child.write(to: path)
    return (path, parent, expected)
  }

  @Test func childOverParentReadsLikeTheOverlay() throws {
    let scratch = try Scratch("vpc-diff")
    defer { scratch.remove() }
    let (child, parent, expected) = try Self.makePair(in: scratch)
    let chain = try openChain(child)
    #expect(chain.layers.map(\.file.path) == [child, parent])
    #expect(chain.virtualSize == Self.size)
    let all = try readAll(chain)
    let d = firstDifference(all, expected)
    #expect(d == nil, "first difference at \(d.map { hex($0) } ?? "")")
    var rng = SplitMix64(seed: 9)
    for _ in 0..<500 {
      let offset = rng.next() % Self.size
      let length = Int(1 + rng.next() % 70_000)
      let bytes = try chain.read(at: offset, count: length)
      #expect(bytes[...] == expected[Int(offset)..<min(expected.count, Int(offset) + length)])
    }
    // The child's own map: data exactly where its bitmap bits are set.
    let block: UInt64 = 512 << 10
    let top = chain.top
    #expect(try top.extent(at: 0, maxLength: Self.size).mapping == .unallocated)
    #expect(try top.extent(at: 0, maxLength: Self.size).length == block)
    let e = try top.extent(at: block, maxLength: Self.size - block)
    #expect(e.length == 8 * 512)
    #expect(try top.extent(at: block + 8 * 512, maxLength: 1 << 20).length == 92 * 512)
    let info = top.info
    #expect(info.backingFilename == "parent.vhd")
    #expect(info.fullBackingFilename == parent)
  }

  /// vdiskfs's bytes of the chain against qemu's, sector by sector. qemu 7.2 cannot open the
  /// chain: it reads a differencing VHD as a plain dynamic one (no parent, and, as for every
  /// dynamic VHD, ignoring the sector bitmaps). So every sector the child's bitmap holds must
  /// equal `qemu-img convert -O raw` of the child, and every other sector that of the parent
  /// (vhd.asciidoc, "Sector bitmap"); and the whole disk must equal the expected content.
  @Test func everySectorMatchesQemusConversionOfTheChildOrTheParent() throws {
    let scratch = try Scratch("vpc-diff-qemu")
    defer { scratch.remove() }
    let (child, parent, expected) = try Self.makePair(in: scratch)
    let ours = try readAll(openChain(child))
    let d = firstDifference(ours, expected)
    #expect(d == nil, "first difference from the expected content at \(d.map { hex($0) } ?? "")")

    let qemuChild = try Qemu.rawContent(of: child, format: "vpc", scratch: scratch)
    let qemuParent = try Qemu.rawContent(of: parent, format: "vpc", scratch: scratch)
    try #require(ours.count == Int(Self.size))
    try #require(qemuChild.count == ours.count && qemuParent.count == ours.count)
    let held = Self.childSectors
    var wrong: [Int] = []
    for sector in 0..<Int(Self.size / 512) {
      let bytes = sector * 512..<(sector + 1) * 512
      let qemu = held.contains(sector) ? qemuChild : qemuParent
      if ours[bytes] != qemu[bytes] { wrong.append(sector) }
    }
    #expect(wrong.isEmpty, "\(wrong.count) sectors differ from qemu's, the first \(wrong.prefix(8))")
    // The two sources differ where the child holds data, so the check tells them apart.
    #expect(held.allSatisfy { qemuChild[$0 * 512..<($0 + 1) * 512] != qemuParent[$0 * 512..<($0 + 1) * 512] })
  }

  @Test func absoluteLocatorAndParentNameFallback() throws {
    let scratch = try Scratch("vpc-diff-loc")
    defer { scratch.remove() }
    // Only an absolute locator that is a real path here.
    let absolute = try Self.makePair(
      in: scratch, locators: [("W2ku", VHDBuilder.utf16LE(scratch.file("parent.vhd")))], childName: "a.vhd")
    #expect(try readAll(openChain(absolute.child)) == absolute.expected)
    // A deprecated single-byte relative locator.
    let single = try Self.makePair(
      in: scratch, locators: [("Wi2r", Array(".\\parent.vhd".utf8))], childName: "b.vhd")
    #expect(try readAll(openChain(single.child)) == single.expected)
    // Only a Windows absolute locator: the parent is found by name next to the child.
    let windows = try Self.makePair(
      in: scratch, locators: [("W2ku", VHDBuilder.utf16LE("D:\\vms\\parent.vhd"))], childName: "c.vhd")
    #expect(try readAll(openChain(windows.child)) == windows.expected)
  }

  @Test func parentWithAnotherUniqueIDIsRefused() throws {
    let scratch = try Scratch("vpc-diff-uuid")
    defer { scratch.remove() }
    let (child, parent, _) = try Self.makePair(in: scratch, parentUUID: [UInt8](repeating: 7, count: 16))
    expectVDiskError(.corrupt, [child, parent, "unique id", "07070707-0707"]) { _ = try openChain(child) }
  }

  @Test func missingParentIsRefused() throws {
    let scratch = try Scratch("vpc-diff-missing")
    defer { scratch.remove() }
    let (child, parent, _) = try Self.makePair(in: scratch)
    try FileManager.default.removeItem(atPath: parent)
    expectVDiskError(.notFound, [child, "parent.vhd", "does not exist"]) { _ = try openChain(child) }
  }

  @Test func parentLoopIsRefused() throws {
    let scratch = try Scratch("vpc-diff-loop")
    defer { scratch.remove() }
    // a.vhd names b.vhd as its parent and b.vhd names a.vhd.
    for (name, other) in [("a.vhd", "b.vhd"), ("b.vhd", "a.vhd")] {
      var disk = VHDBuilder(virtualSize: 1 << 20)
      disk.parentName = other
      disk.locators = [("W2ru", VHDBuilder.utf16LE(".\\" + other))]
      try disk.write(to: scratch.file(name))
    }
    expectVDiskError(.corrupt, ["loops", "a.vhd", "b.vhd"]) { _ = try openChain(scratch.file("a.vhd")) }
  }

  @Test func qcow2OverADifferencingChain() throws {
    let scratch = try Scratch("vpc-diff-qcow2")
    defer { scratch.remove() }
    let pair = try Self.makePair(in: scratch)
    let child = pair.child
    var expected = pair.expected
    let top = scratch.file("top.qcow2")
    try Qemu.create(top, size: "\(Self.size)", backing: child, backingFormat: "vpc")
    // qemu cannot open the backing chain's parent, so write the top without its backing.
    try run(
      "qemu-io",
      ["-c", "write -P 0x99 64k 64k", "--image-opts", "driver=qcow2,file.filename=\(top),backing="])
    expected.replaceSubrange(65536..<131072, with: [UInt8](repeating: 0x99, count: 65536))
    let chain = try openChain(top)
    #expect(chain.layers.count == 3)
    #expect(try readAll(chain) == expected)
  }
}
