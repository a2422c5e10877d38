import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore

@testable import VHDX

/// Differencing VHDX children (qemu cannot make them) built in test code over qemu-made parents.
@Suite struct DifferencingTests {
  /// A qemu-made dynamic parent with patterns; returns its DataWriteGuid and content.
  static func makeParent(_ path: String, size: String, scratch: Scratch) throws -> (GUID, [UInt8]) {
    try Qemu.create(path, format: "vhdx", size: size, options: ["block_size=1M"])
    try Qemu.io(path, format: "vhdx", ["write -P 0x61 0 3M", "write -P 0x62 4M 2M", "write -P 0x63 7M 512k"])
    let layer = try #require(try openChain(path).top as? VHDXLayer)
    return (layer.header.dataWriteGuid, try Qemu.rawContent(of: path, scratch: scratch))
  }

  static func child(size: UInt64, linkage: GUID, relative: String = ".\\base.vhdx") -> VHDXBuilder {
    VHDXBuilder.differencing(virtualSize: size, parentLinkage: linkage, relativePath: relative)
  }

  @Test(arguments: [512, 4096] as [UInt64])
  func allBlockStatesOverAParent(sectorSize: UInt64) throws {
    let scratch = try Scratch("vhdx-diff")
    defer { scratch.remove() }
    let base = scratch.file("base.vhdx")
    let (guid, parent) = try Self.makeParent(base, size: "8M", scratch: scratch)
    var child = Self.child(size: 8 << 20, linkage: guid)
    child.logicalSectorSize = sectorSize
    let perBlock = Int((1 << 20) / sectorSize)
    child.blocks = [
      0: .full(0xA1),
      1: .partial(0xA2, [0..<1, 8..<24, perBlock - 8..<perBlock]),
      2: .state(2),  // ZERO: zeros, not the parent
      3: .state(3),  // UNMAPPED
      // 4: NOT_PRESENT: the parent
      5: .partial(0xA3, [1..<2, 3..<perBlock]),
      6: .state(1),  // UNDEFINED
      7: .partial(0xA4, [0..<perBlock]),
    ]
    let image = scratch.file("child.vhdx")
    try child.write(to: image)
    let chain = try openChain(image)
    #expect(chain.layers.map(\.file.path) == [image, base])
    let expected = child.expected(over: parent)
    #expect(firstDifference(try readAll(chain), expected) == nil)
    #expect(firstDifference(try readAll(chain, seed: 5), expected) == nil)
    #expect(try #require(chain.top as? VHDXLayer).bat.resident != nil)
    // The same with the BAT (and sector bitmaps) paged through a cache too small to hold it.
    let paged = try openChain(image, OpenOptions(cacheSize: 0))
    #expect(try #require(paged.top as? VHDXLayer).bat.resident == nil)
    #expect(firstDifference(try readAll(paged), expected) == nil)

    let top = chain.top
    #expect(try top.extent(at: 4 << 20, maxLength: 1 << 20).mapping == .unallocated)
    #expect(try top.extent(at: 2 << 20, maxLength: 2 << 20).mapping == .zero)
    #expect(try top.extent(at: 2 << 20, maxLength: 2 << 20).length == 2 << 20)
    let first = try top.extent(at: (1 << 20) + sectorSize, maxLength: 1 << 20)
    #expect(first.mapping == .unallocated)
    #expect(first.length == 7 * sectorSize)
    // Block 0 (full) and the first sector of block 1 (partial) sit in consecutive host blocks.
    let joined = try top.extent(at: 0, maxLength: 8 << 20)
    #expect(joined.length == (1 << 20) + sectorSize)
    #expect(try chain.status(at: 4 << 20, maxLength: 1 << 20).depth == 1)

    let info = top.info
    #expect(info.backingFilename == ".\\base.vhdx")
    #expect(info.fullBackingFilename == base)
    #expect(info.formatSpecific.contains(InfoField("has-parent", .bool(true))))
  }

  /// Chunks hold 2^23 sectors: a 4.5 GiB child has its second chunk's bitmap after 4 GiB.
  @Test func secondChunkUsesItsOwnSectorBitmap() throws {
    let scratch = try Scratch("vhdx-chunk")
    defer { scratch.remove() }
    let base = scratch.file("base.vhdx")
    try Qemu.create(base, format: "vhdx", size: "4608M", options: ["block_size=1M"])
    try Qemu.io(base, format: "vhdx", ["write -P 0x71 4095M 2M"])
    let parentLayer = try #require(try openChain(base).top as? VHDXLayer)
    var child = Self.child(size: 4608 << 20, linkage: parentLayer.header.dataWriteGuid)
    child.blocks = [4095: .partial(0xB1, [0..<16]), 4096: .partial(0xB2, [16..<32]), 4097: .full(0xB3)]
    let image = scratch.file("child.vhdx")
    try child.write(to: image)
    let chain = try openChain(image)
    let window = try chain.read(at: 4095 << 20, count: 3 << 20)
    var expected = [UInt8](repeating: 0x71, count: 2 << 20) + [UInt8](repeating: 0xB3, count: 1 << 20)
    expected.replaceSubrange(0..<8192, with: repeatElement(0xB1, count: 8192))
    expected.replaceSubrange((1 << 20) + 8192..<(1 << 20) + 16384, with: repeatElement(0xB2, count: 8192))
    #expect(firstDifference(window, expected) == nil)
  }

  @Test func linkageMismatchNamesBothFiles() throws {
    let scratch = try Scratch("vhdx-linkage")
    defer { scratch.remove() }
    let base = scratch.file("base.vhdx")
    _ = try Self.makeParent(base, size: "8M", scratch: scratch)
    let image = scratch.file("child.vhdx")
    try Self.child(size: 8 << 20, linkage: GUID.random()).write(to: image)
    expectVDiskError(.corrupt, [image, base, "parent_linkage"]) { _ = try openChain(image) }
  }

  @Test func parentLinkage2IsAccepted() throws {
    let scratch = try Scratch("vhdx-linkage2")
    defer { scratch.remove() }
    let base = scratch.file("base.vhdx")
    let (guid, parent) = try Self.makeParent(base, size: "8M", scratch: scratch)
    var child = Self.child(size: 8 << 20, linkage: GUID.random())
    child.locator?.append(("parent_linkage2", "{\(guid)}"))
    let image = scratch.file("child.vhdx")
    try child.write(to: image)
    #expect(firstDifference(try readAll(openChain(image)), parent) == nil)
  }

  @Test func missingParentAndLoops() throws {
    let scratch = try Scratch("vhdx-missing")
    defer { scratch.remove() }
    let image = scratch.file("child.vhdx")
    try Self.child(size: 8 << 20, linkage: GUID.random()).write(to: image)
    expectVDiskError(.notFound, [scratch.file("base.vhdx"), "/nowhere/base.vhdx", image]) {
      _ = try openChain(image)
    }
    // A child that names itself.
    let loop = scratch.file("loop.vhdx")
    try Self.child(size: 8 << 20, linkage: GUID.random(), relative: "loop.vhdx").write(to: loop)
    expectVDiskError(.corrupt, ["loops"]) { _ = try openChain(loop) }
  }

  @Test func absoluteWin32AndVolumePathsAreTriedWithoutTheirPrefix() throws {
    let scratch = try Scratch("vhdx-paths")
    defer { scratch.remove() }
    let dir = try scratch.directory("parents")
    let base = dir + "/base.vhdx"
    let (guid, parent) = try Self.makeParent(base, size: "8M", scratch: scratch)
    var child = VHDXBuilder(virtualSize: 8 << 20)
    child.locator = [
      ("parent_linkage", "{\(guid)}"), ("relative_path", "..\\elsewhere\\base.vhdx"),
      ("absolute_win32_path", "D:" + dir.replacingOccurrences(of: "/", with: "\\") + "\\base.vhdx"),
    ]
    let image = scratch.file("child.vhdx")
    try child.write(to: image)
    let chain = try openChain(image)
    #expect(chain.layers.last?.file.path == base)
    #expect(firstDifference(try readAll(chain), parent) == nil)

    let locator = try #require((chain.top as? VHDXLayer)?.metadata.parentLocator)
    #expect(locator.candidates(relativeTo: image).first == scratch.path + "/../elsewhere/base.vhdx")
    var volume = locator
    volume.entries = ["volume_path": "\\\\?\\Volume{26A21BDA-A627-11D7-9931-806E6F6E6963}\\vms\\p.vhdx"]
    #expect(volume.candidates(relativeTo: "/x/c.vhdx") == ["/vms/p.vhdx", "/x/p.vhdx"])
  }

  @Test func differencingChildUnderQcow2() throws {
    let scratch = try Scratch("vhdx-diff-qcow2")
    defer { scratch.remove() }
    let base = scratch.file("base.vhdx")
    let (guid, parent) = try Self.makeParent(base, size: "8M", scratch: scratch)
    var child = Self.child(size: 8 << 20, linkage: guid)
    child.blocks = [1: .partial(0xC1, [4..<12]), 6: .state(2)]
    let mid = scratch.file("child.vhdx")
    try child.write(to: mid)
    let top = scratch.file("top.qcow2")
    // qemu cannot open a differencing VHDX: write the top first, then link it unsafely.
    try Qemu.create(top, size: "8M")
    try Qemu.io(top, ["write -P 0xD1 0 64k"])
    try Qemu.img("rebase", "-u", "-b", "child.vhdx", "-F", "vhdx", top)
    var expected = child.expected(over: parent)
    expected.replaceSubrange(0..<65536, with: repeatElement(0xD1, count: 65536))
    let chain = try openChain(top)
    #expect(chain.layers.map(\.formatName) == ["qcow2", "vhdx", "vhdx"])
    #expect(firstDifference(try readAll(chain), expected) == nil)
  }
}
