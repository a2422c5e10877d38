import Foundation
import ImageFormats
import TestSupport
import Testing
import VDiskCore

/// `-o backing_dir=DIR` confines every backing file and extent file to DIR after symbolic links
/// and `..` are resolved; `-o nobacking` opens the top image alone.
@Suite struct BackingConfinementTests {
  /// scratch/images/{vm/top.qcow2 → ../base/base.qcow2}, scratch/outside/secret.raw.
  static func makeTree(_ scratch: Scratch) throws -> (
    images: String, top: String, base: String, secret: String
  ) {
    let images = try scratch.directory("images")
    let vm = try scratch.directory("images/vm")
    _ = try scratch.directory("images/base")
    let outside = try scratch.directory("outside")
    let base = images + "/base/base.qcow2"
    try Qemu.create(base, size: "1M")
    try Qemu.io(base, ["write -P 0x42 0 1M"])
    let top = vm + "/top.qcow2"
    try Qemu.create(top, size: "1M", backing: "../base/base.qcow2", backingFormat: "qcow2")
    let secret = outside + "/secret.raw"
    try run("truncate", ["-s", "1M", secret])
    return (images, top, base, secret)
  }

  @Test func aChainInsideTheDirectoryOpensAndOneOutsideIsRefused() throws {
    let scratch = try Scratch("confine")
    defer { scratch.remove() }
    let tree = try Self.makeTree(scratch)
    let chain = try openChain(tree.top, OpenOptions(backingDirectory: tree.images))
    #expect(chain.layers.map(\.file.path) == [tree.top, tree.base])
    #expect(try chain.read(at: 0, count: 1) == [0x42])
    // The same chain confined to the top's own directory: its parent lies outside.
    let vm = tree.images + "/vm"
    expectVDiskError(
      .notPermitted,
      [tree.top, "backing file \"../base/base.qcow2\"", tree.base, "outside backing_dir \(vm)"]
    ) {
      _ = try openChain(tree.top, OpenOptions(backingDirectory: vm))
    }
    // A backing_dir that does not exist is an error of its own.
    expectVDiskError(.notFound, ["backing_dir does not exist"]) {
      _ = try openChain(tree.top, OpenOptions(backingDirectory: scratch.file("nowhere")))
    }
  }

  /// `..` and symbolic links are resolved before the check: neither escapes.
  @Test func dotDotAndSymbolicLinksCannotEscape() throws {
    let scratch = try Scratch("confine")
    defer { scratch.remove() }
    let tree = try Self.makeTree(scratch)
    let byDots = tree.images + "/vm/dots.qcow2"
    try Qemu.img("create", "-f", "qcow2", "-u", "-b", "../../outside/secret.raw", "-F", "raw", byDots, "1M")
    expectVDiskError(.notPermitted, [byDots, tree.secret, "outside backing_dir"]) {
      _ = try openChain(byDots, OpenOptions(backingDirectory: tree.images))
    }
    try run("ln", ["-s", tree.secret, tree.images + "/vm/link.raw"])
    let byLink = tree.images + "/vm/link.qcow2"
    try Qemu.img("create", "-f", "qcow2", "-u", "-b", "link.raw", "-F", "raw", byLink, "1M")
    expectVDiskError(.notPermitted, [byLink, "\"link.raw\"", tree.secret, "outside backing_dir"]) {
      _ = try openChain(byLink, OpenOptions(backingDirectory: tree.images))
    }
    // Without backing_dir both open, by their resolved paths.
    #expect(try openChain(byLink).layers.last?.file.path == tree.secret)
    #expect(try openChain(byDots).layers.last?.file.path == tree.secret)
    // A VMDK extent file is confined the same way.
    let descriptor = tree.images + "/vm/flat.vmdk"
    try LinkedFileTests.flatDescriptor(extent: "link.raw").write(
      toFile: descriptor, atomically: true, encoding: .utf8)
    expectVDiskError(
      .notPermitted, [descriptor, "extent file \"link.raw\"", tree.secret, "outside backing_dir"]
    ) {
      _ = try openChain(descriptor, OpenOptions(backingDirectory: tree.images))
    }
    #expect(try openChain(descriptor).virtualSize == 1 << 20)
  }

  /// nobacking: the top alone; what it does not hold reads as zeros (qcow2 and vmdk children;
  /// VHD and VHDX in their own suites' builders).
  @Test(arguments: ["qcow2", "vmdk"])
  func nobackingReadsUnallocatedRangesAsZeros(_ format: String) throws {
    let scratch = try Scratch("nobacking")
    defer { scratch.remove() }
    let base = scratch.file("base.\(format)")
    try Qemu.create(base, format: format, size: "1M")
    try Qemu.io(base, format: format, ["write -P 0x42 0 1M"])
    let top = scratch.file("top.\(format)")
    try Qemu.img("create", "-f", format, "-b", base, "-F", format, top)
    try Qemu.io(top, format: format, ["write -P 0x43 64k 64k"])
    let chain = try openChain(top, OpenOptions(openBacking: false))
    #expect(chain.layers.count == 1)
    var expected = [UInt8](repeating: 0, count: 1 << 20)
    expected.replaceSubrange((64 << 10)..<(128 << 10), with: [UInt8](repeating: 0x43, count: 64 << 10))
    #expect(try chain.read(at: 0, count: 1 << 20) == expected)
    // With the chain, the base shows through.
    #expect(try openChain(top).read(at: 0, count: 1) == [0x42])
  }
}
