import Foundation
import ImageFormats
import RemoteStore
import TestSupport
import Testing
import VDiskCore

/// The opener through the store seam: chains, extents and names resolved in the store of the
/// image that names them, with a store that serves local files (`DirectoryStore`).
@Suite struct RemoteChainTests {
  var options: OpenOptions {
    var options = OpenOptions()
    options.stores = StoreRegistry(stores: [DirectoryStore.self])
    return options
  }

  func expectSame(_ location: String, as local: String, options: OpenOptions? = nil, scratch: Scratch) throws
  {
    let expected = try Qemu.rawContent(of: local, scratch: scratch)
    let chain = try openChain(location, options ?? self.options)
    #expect(chain.top.file.path == location)
    #expect(chain.top.file.descriptor == nil)
    let actual = try readAll(chain)
    #expect(actual.count == expected.count)
    #expect(firstDifference(actual, expected) == nil)
  }

  @Test func aChainWithRelativeAndAbsoluteBackingNamesResolvesInTheStore() throws {
    let scratch = try Scratch("remote-chain")
    defer { scratch.remove() }
    let base = scratch.file("base.vmdk")
    try Qemu.create(base, format: "vmdk", size: "8M")
    try Qemu.io(base, format: "vmdk", ["write -P 0x11 0 3M"])
    let middle = scratch.file("middle.vmdk")
    try Qemu.create(middle, format: "vmdk", size: "8M", backing: "base.vmdk", backingFormat: "vmdk")
    try Qemu.io(middle, format: "vmdk", ["write -P 0x22 1M 2M"])
    let top = scratch.file("top.qcow2")
    try Qemu.create(top, size: "8M", backing: middle, backingFormat: "vmdk")  // absolute name
    try Qemu.io(top, ["write -P 0x33 2M 64k"])
    try expectSame("dir://" + top, as: top, scratch: scratch)
    let chain = try openChain("dir://" + top, options)
    #expect(chain.top.backing?.file.path == "dir://" + middle)
    #expect(chain.top.backing?.backing?.file.path == "dir://" + base)
  }

  @Test func aVMDKDescriptorsExtentsComeFromTheStore() throws {
    let scratch = try Scratch("remote-vmdk")
    defer { scratch.remove() }
    let image = scratch.file("split.vmdk")
    try Qemu.create(image, format: "vmdk", size: "12M", options: ["subformat=twoGbMaxExtentSparse"])
    try Qemu.io(image, format: "vmdk", ["write -P 0x5a 1M 5M"])
    try expectSame("dir://" + image, as: image, scratch: scratch)
  }

  @Test func aLocalImageNamesARemoteBaseOnlyWhenAllowed() throws {
    let scratch = try Scratch("remote-local-top")
    defer { scratch.remove() }
    let base = scratch.file("base.raw")
    try Data(patternBytes(4 << 20)).write(to: URL(fileURLWithPath: base))
    let top = scratch.file("top.qcow2")
    try Qemu.create(top, size: "4M", backing: base, backingFormat: "raw")
    try Qemu.io(top, ["write -P 0x44 1M 4k"])
    let expected = try Qemu.rawContent(of: top, scratch: scratch)
    // Point the top's backing name at the remote location (as --overlay over a remote base does).
    _ = try Qemu.img("rebase", "-u", "-b", "dir://" + base, "-F", "raw", top)

    let refused = #expect(throws: VDiskError.self) { try openChain(top, options) }
    #expect(refused?.kind == .notPermitted)
    #expect(refused?.detail.contains("remote_backing") == true)

    var allowed = options
    allowed.allowRemoteBacking = true
    let chain = try openChain(top, allowed)
    #expect(chain.top.backing?.file.path == "dir://" + base)
    #expect(firstDifference(try readAll(chain), expected) == nil)

    allowed.backingDirectory = scratch.path  // safe mode: never
    #expect(throws: VDiskError.self) { try openChain(top, allowed) }
  }

  @Test func aMissingRemoteImageOrBackingFileIsNotFound() throws {
    let scratch = try Scratch("remote-missing")
    defer { scratch.remove() }
    let missing = #expect(throws: VDiskError.self) {
      try openChain("dir://" + scratch.file("nope.qcow2"), options)
    }
    #expect(missing?.kind == .notFound)
    let top = scratch.file("top.qcow2")
    _ = try Qemu.img("create", "-q", "-f", "qcow2", "-u", "-b", "gone.qcow2", "-F", "qcow2", top, "1M")
    let backing = #expect(throws: VDiskError.self) { try openChain("dir://" + top, options) }
    #expect(backing?.kind == .notFound)
  }

  @Test func aRemoteChainThatLoopsIsRefused() throws {
    let scratch = try Scratch("remote-loop")
    defer { scratch.remove() }
    let a = scratch.file("a.qcow2")
    let b = scratch.file("b.qcow2")
    try Qemu.create(b, size: "1M")
    try Qemu.create(a, size: "1M", backing: "b.qcow2", backingFormat: "qcow2")
    _ = try Qemu.img("rebase", "-u", "-b", "a.qcow2", "-F", "qcow2", b)
    let error = #expect(throws: VDiskError.self) { try openChain("dir://" + a, options) }
    #expect(error?.kind == .corrupt)
    #expect(error?.detail.contains("loops") == true)
  }
}
